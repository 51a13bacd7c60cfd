"""``Membership``: who is alive, from heartbeats.

Every node beats on its cluster's subject; a member is live while its last beat is younger than
three beat periods (``dead_after_s``) on the manager's monotonic clock, and until it leaves
(a graceful close says so) or a request to it goes unanswered (:meth:`mark_dead`; its next beat
brings it back). Thread safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .placement import Member


class Membership:
    def __init__(
        self, me: Callable[[], Member], monotonic: Callable[[], float], dead_after_s: float
    ):
        self._me = me
        self._monotonic = monotonic
        self.dead_after_s = dead_after_s
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.forget_all()

    def forget_all(self) -> None:
        self._seen: dict[str, tuple[Member, float]] = {}
        self._dead: set[str] = set()

    def beat(self, member: Member) -> None:
        with self._lock:
            self._seen[member.name] = (member, self._monotonic())
            self._dead.discard(member.name)
            self._changed.notify_all()

    def leave(self, name: str) -> None:
        with self._lock:
            self._seen.pop(name, None)
            self._changed.notify_all()

    def mark_dead(self, name: str) -> None:
        with self._lock:
            if name in self._seen:
                self._dead.add(name)
            self._changed.notify_all()

    def live(self) -> list[Member]:
        """The live members, this node included."""
        me = self._me()
        with self._lock:
            return [me, *self._live_others(me.name)]

    def is_live(self, name: str) -> bool:
        return any(m.name == name for m in self.live())

    def _live_others(self, me: str) -> list[Member]:
        now = self._monotonic()
        return [
            member
            for name, (member, at) in self._seen.items()
            if name != me and name not in self._dead and now - at <= self.dead_after_s
        ]

    def wait_for(self, predicate: Callable[[list[Member]], bool], timeout_s: float) -> bool:
        """Wait, at most ``timeout_s`` of real time, until ``predicate(live())`` holds."""
        with self._changed:
            return self._changed.wait_for(
                lambda: predicate([self._me(), *self._live_others(self._me().name)]), timeout_s
            )
