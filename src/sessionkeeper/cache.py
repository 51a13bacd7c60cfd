"""A node's local sessions: an LRU map of ``(app, token)`` to :class:`Session`. Thread safe.

The cache only orders and bounds; the manager decides what to write before an eviction.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator

from .session import Session

Key = tuple[str, str]


class SessionCache:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("cache_size must be at least 1")
        self.capacity = capacity
        self.forget_all()

    def forget_all(self) -> None:
        """Drop every session, writing nothing, with a fresh lock: what a forked child does with
        the cache it inherited (its sessions, and their locks, are the parent's). Not thread
        safe: only at construction and in a child just forked, where one thread runs."""
        self._items: OrderedDict[Key, Session] = OrderedDict()
        # token -> the apps whose sessions use it here (apps may share an id), so that asking
        # "does another app use this id?" is a lookup, not a scan of the whole cache.
        self._apps_of: dict[str, set[str]] = {}
        self._apps: set[str] = set()  # every app whose session was ever held here
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Key) -> Session | None:
        with self._lock:
            s = self._items.get(key)
            if s is not None:
                self._items.move_to_end(key)
            return s

    def add(self, key: Key, session: Session) -> Session:
        """Insert unless present; return the cached object (so concurrent loads share one)."""
        with self._lock:
            existing = self._items.get(key)
            if existing is not None:
                self._items.move_to_end(key)
                return existing
            self._items[key] = session
            self._apps_of.setdefault(key[1], set()).add(key[0])
            self._apps.add(key[0])
            return session

    def remove(self, key: Key, session: Session | None = None) -> bool:
        with self._lock:
            current = self._items.get(key)
            if current is None or (session is not None and current is not session):
                return False
            del self._items[key]
            apps = self._apps_of[key[1]]
            apps.discard(key[0])
            if not apps:
                del self._apps_of[key[1]]
            return True

    def other_app_holds(self, app: str, token: str) -> bool:
        """Whether a created session of another app uses ``token`` (apps may share an id)."""
        with self._lock:
            return any(
                self._items[(other, token)].created
                for other in self._apps_of.get(token, ())
                if other != app
            )

    def apps(self) -> frozenset[str]:
        """Every app whose session this cache has held since it was built (or forgotten), evicted
        ones included: the apps a shared id may name in the store (``share_ids_across_apps``)."""
        with self._lock:
            return frozenset(self._apps)

    def over_capacity(self) -> int:
        return len(self._items) - self.capacity

    def eviction_candidates(self, n: int) -> list[Session]:
        """Up to ``n`` least recently used sessions that no request is using."""
        out: list[Session] = []
        with self._lock:
            for s in self._items.values():
                if len(out) >= n:
                    break
                if not s.in_use:
                    out.append(s)
        return out

    def snapshot(self) -> list[Session]:
        with self._lock:
            return list(self._items.values())

    def __iter__(self) -> Iterator[Session]:
        return iter(self.snapshot())
