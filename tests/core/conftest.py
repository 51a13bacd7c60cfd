"""Fixtures for the core tests: a real store that records what reaches it and can fail on demand,
and managers on a fake clock with the housekeeping thread off (tests call ``housekeep()``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

import sessionkeeper as sk
from sessionkeeper.stores import (
    ExpiredSession,
    Invalidation,
    MemoryStore,
    RetryPolicy,
    SaveRequest,
    SaveResult,
    StoredSession,
    Touch,
)


class Outage(ConnectionError):
    """What a driver raises while the store is down."""


class RecordingStore(MemoryStore):
    """A MemoryStore that records every call and every SaveRequest, and raises :class:`Outage`
    from every hook while ``down`` is set."""

    transient_errors = (Outage,)

    def __init__(self) -> None:
        super().__init__(retry=RetryPolicy(attempts=2, backoff_s=0.0), sleep=lambda _s: None)
        self.calls: list[str] = []
        self.saves: list[SaveRequest] = []
        self.loads: list[tuple[str, str]] = []
        self.down = False
        self._rec = threading.Lock()

    def _hook(self, name: str) -> None:
        with self._rec:
            self.calls.append(name)
        if self.down:
            raise Outage(f"store down during {name}")

    def _load(self, app: str, token: str) -> StoredSession | None:
        self._hook("load")
        with self._rec:
            self.loads.append((app, token))
        return super()._load(app, token)

    def _save_batch(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        self._hook("save")
        results = super()._save_batch(requests)
        with self._rec:
            self.saves.extend(requests)
        return results

    def _touch_batch(self, touches: Sequence[Touch]) -> None:
        self._hook("touch")
        super()._touch_batch(touches)

    def _delete(self, app: str, token: str, tombstone_until: float) -> bool:
        self._hook("delete")
        return super()._delete(app, token, tombstone_until)

    def _invalidations_since(
        self, cursor: str | None, limit: int
    ) -> tuple[list[Invalidation], str]:
        self._hook("feed")
        return super()._invalidations_since(cursor, limit)

    def _delete_expired(self, before: float, limit: int) -> list[ExpiredSession]:
        self._hook("delete_expired")
        return super()._delete_expired(before, limit)

    # -- helpers for assertions --
    @property
    def written(self) -> int:
        return self.stats.sessions_written

    def raw(self, app: str, token: str) -> StoredSession | None:
        return MemoryStore._load(self, app, token)

    def saves_of(self, token: str) -> list[SaveRequest]:
        return [r for r in self.saves if r.token == token]


@pytest.fixture
def clock() -> sk.FakeClock:
    return sk.FakeClock()


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


MakeManager = Callable[..., sk.SessionManager]


@pytest.fixture
def make(store: RecordingStore, clock: sk.FakeClock) -> Iterator[MakeManager]:
    """``make(**options)``: a manager on the shared store and clock, node "a" unless told."""
    made: list[sk.SessionManager] = []

    def factory(**options: Any) -> sk.SessionManager:
        options.setdefault("store", store)
        options.setdefault("clock", clock)
        options.setdefault("node", "a")
        options.setdefault("housekeeping", False)
        m = sk.SessionManager(**options)
        made.append(m)
        return m

    yield factory
    store.down = False
    for m in made:
        m.close(deadline_s=0)


@contextmanager
def held(
    m: sk.SessionManager, app: str = "default", session_id: str | None = None
) -> Iterator[tuple[sk.ActiveRequest, sk.Session]]:
    """``m.request()``, through the lifecycle, also yielding the hold (for its cookie decision)."""
    active = m.lifecycle.begin_request(app, session_id)
    ok = False
    try:
        yield active, active.session
        ok = True
    finally:
        m.lifecycle.end_request(active, ok=ok)


def new_session(m: sk.SessionManager, app: str = "shop", **attrs: Any) -> str:
    """Create a session with ``attrs`` in one request; return its id."""
    with m.request(app=app) as s:
        s.update(attrs or {"k": 0})
        sid = s.id
    return sid
