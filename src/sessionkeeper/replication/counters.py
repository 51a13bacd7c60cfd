"""Replication's counters, named ``replication_*`` in ``manager.stats()``. Thread safe.

Kept apart from :class:`~sessionkeeper.stats.Counters` because their names are open-ended
(one per rejection reason). Every name a metric family exposes is there from the start, at zero;
a forked child counts from zero.
"""

from __future__ import annotations

import threading
from collections import Counter

from .. import forks
from ..metricfamilies import REPLICATION_COUNTERS

#: The counters every replicating manager reports, at zero until they count.
KNOWN = tuple(key for family in REPLICATION_COUNTERS for key in family.keys)


class ReplicationCounters:
    def __init__(self) -> None:
        self._start()
        forks.at_fork_in_child(self, ReplicationCounters._start)

    def _start(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter(dict.fromkeys(KNOWN, 0))
        self._ack_wait_s = 0.0

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def sent(self, frame: bytes) -> None:
        """One message of ``len(frame)`` bytes sent (a request, a reply, a broadcast)."""
        with self._lock:
            self._counts["replication_messages_sent"] += 1
            self._counts["replication_bytes_sent"] += len(frame)

    def acked(self, wait_s: float) -> None:
        """A backup acknowledged a delta or a copy after ``wait_s``."""
        with self._lock:
            self._counts["replication_acks"] += 1
            self._ack_wait_s += wait_s

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            out: dict[str, float] = dict(self._counts)
            out["replication_ack_wait_total_s"] = self._ack_wait_s
            return out

    def rejected(self) -> int:
        """Messages dropped unapplied, whatever the reason."""
        with self._lock:
            return sum(n for k, n in self._counts.items() if k.startswith("replication_rejected_"))
