"""Replication's counters, named ``replication_*`` in ``manager.stats()``. Thread safe.

Kept apart from :class:`~sessionkeeper.stats.Counters` because their names are open-ended
(one per rejection reason); a forked child counts from zero.
"""

from __future__ import annotations

import threading
from collections import Counter

from .. import forks


class ReplicationCounters:
    def __init__(self) -> None:
        self._start()
        forks.at_fork_in_child(self, ReplicationCounters._start)

    def _start(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def rejected(self) -> int:
        """Messages dropped unapplied, whatever the reason."""
        with self._lock:
            return sum(n for k, n in self._counts.items() if k.startswith("replication_rejected_"))
