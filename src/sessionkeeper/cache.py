"""A node's local sessions: an LRU map of ``(app, token)`` to :class:`Session`. Thread safe.

The cache only orders and bounds; the manager decides what to write before an eviction.

Entries are kept by token: nearly every token names one app's session, which is then the entry
itself (no ``(app, token)`` tuple and no index of apps per token: about 100 bytes per cached
session). Apps that share an id (``share_ids_across_apps``) share one entry, a plain ``dict`` of
app to session, and move in the LRU order together.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from .session import Session

Key = tuple[str, str]
_Entry = Session | dict[str, Session]  # one app's session, or several apps' under one token


def _sessions(entry: _Entry) -> Iterator[Session]:
    if isinstance(entry, Session):
        yield entry
    else:
        yield from entry.values()


def _session_of(entry: _Entry | None, app: str) -> Session | None:
    if entry is None:
        return None
    if isinstance(entry, Session):
        return entry if entry.app == app else None
    return entry.get(app)


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
        # Least recently used first: a plain dict keeps insertion order, and a use moves an
        # entry to the end by reinserting it (an OrderedDict costs ~30 bytes more per entry).
        self._items: dict[str, _Entry] = {}
        self._count = 0
        self._apps: set[str] = set()  # every app whose session was ever held here
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def get(self, key: Key) -> Session | None:
        app, token = key
        with self._lock:  # every request's path: _session_of and _to_end, inline
            items = self._items
            entry = items.get(token)
            if entry is None:
                return None
            s = entry if isinstance(entry, Session) else entry.get(app)
            if s is None or s.app != app:
                return None
            items[token] = items.pop(token)
            return s

    def _to_end(self, token: str) -> None:
        """Most recently used now. Caller holds the lock."""
        self._items[token] = self._items.pop(token)

    def add(self, key: Key, session: Session) -> Session:
        """Insert unless present; return the cached object (so concurrent loads share one)."""
        app, token = key
        with self._lock:
            entry = self._items.get(token)
            existing = _session_of(entry, app)
            if existing is not None:
                self._to_end(token)
                return existing
            if entry is None:
                self._items[token] = session if session.app == app else {app: session}
            else:
                if isinstance(entry, Session):
                    entry = self._items[token] = {entry.app: entry}
                entry[app] = session
                self._to_end(token)
            self._count += 1
            self._apps.add(app)
            return session

    def remove(self, key: Key, session: Session | None = None) -> bool:
        app, token = key
        with self._lock:
            entry = self._items.get(token)
            current = _session_of(entry, app)
            if current is None or (session is not None and current is not session):
                return False
            if isinstance(entry, Session):
                del self._items[token]
            else:
                assert entry is not None
                del entry[app]
                if not entry:
                    del self._items[token]
                elif len(entry) == 1:
                    (only,) = entry.values()
                    if only.app in entry:
                        self._items[token] = only
            self._count -= 1
            return True

    def other_app_holds(self, app: str, token: str) -> bool:
        """Whether a created session of another app uses ``token`` (apps may share an id)."""
        with self._lock:
            entry = self._items.get(token)
            if entry is None:
                return False
            if isinstance(entry, Session):
                return entry.app != app and entry.created
            return any(s.created for other, s in entry.items() if other != app)

    def apps(self) -> frozenset[str]:
        """Every app whose session this cache has held since it was built (or forgotten), evicted
        ones included: the apps a shared id may name in the store (``share_ids_across_apps``)."""
        with self._lock:
            return frozenset(self._apps)

    def over_capacity(self) -> int:
        return self._count - self.capacity

    def eviction_candidates(self, n: int) -> list[Session]:
        """Up to ``n`` least recently used sessions that no request is using."""
        out: list[Session] = []
        with self._lock:
            for entry in self._items.values():
                for s in _sessions(entry):
                    if len(out) >= n:
                        return out
                    if not s.in_use:
                        out.append(s)
        return out

    def snapshot(self) -> list[Session]:
        with self._lock:
            return [s for entry in self._items.values() for s in _sessions(entry)]

    def __iter__(self) -> Iterator[Session]:
        return iter(self.snapshot())
