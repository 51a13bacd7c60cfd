"""The invalidation feed between nodes (issue 14): a logout or a login on one node ends the old id
in every other node's cache within a poll; a stale feed is read before a cache hit is trusted;
a copy cut off from the store for longer than its tombstone lives never writes itself back.

Two managers on one store are two nodes; ``housekeep()`` is one poll of a node's housekeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sessionkeeper as sk
from sessionkeeper.stores import (
    AppCounts,
    ExpiredSession,
    Invalidation,
    MemoryStore,
    RetryPolicy,
    SaveRequest,
    SaveResult,
    Store,
    StoredSession,
    Touch,
)

from .conftest import MakeManager, Outage, RecordingStore, new_session


def token(sid: str) -> str:
    return sid.partition(".")[0]


def on(m: sk.SessionManager, sid: str, **changes: Any) -> dict[str, Any]:
    """One request on ``m`` with ``sid`` rewritten to name ``m``'s node, as a client may do;
    returns what the session held."""
    with m.request(app="shop", session_id=f"{token(sid)}.{m.node}") as s:
        seen = dict(s)
        s.update(changes)
    return seen


def cached_on_b(
    make: MakeManager, **options: Any
) -> tuple[sk.SessionManager, sk.SessionManager, str]:
    a, b = make(node="a", **options), make(node="b", **options)
    sid = new_session(a, user="alice")
    assert on(b, sid) == {"user": "alice"}  # a failover: b caches it now
    return a, b, sid


def test_logout_on_one_node_ends_the_cached_copy_on_every_other_within_a_poll(
    make: MakeManager, store: RecordingStore
) -> None:
    a, b, sid = cached_on_b(make)
    destroyed: list[str] = []

    class Destroyed(sk.SessionListener):
        def session_destroyed(self, event: sk.SessionEvent) -> None:
            destroyed.append(event.token)

    b.add_listener(Destroyed())
    with a.request(app="shop", session_id=sid) as s:
        s.invalidate()
    b.housekeep()  # one poll
    assert on(b, sid, user="mallory") == {}  # not served: a new session
    b.flush()
    assert store.raw("shop", token(sid)) is None  # nothing written back
    assert b.stats()["feed_dropped"] == 1 and destroyed == []  # a fired it, not b


def test_login_on_one_node_ends_the_pre_login_id_on_every_other(make: MakeManager) -> None:
    a, b, sid = cached_on_b(make)
    with a.request(app="shop", session_id=sid) as s:
        s.rotate_id()
        new = s.id
    b.housekeep()
    assert on(b, sid) == {}
    assert on(b, new) == {"user": "alice"}  # the new id is served everywhere


def test_a_cache_hit_reads_nothing_from_the_store_while_the_feed_is_fresh(
    make: MakeManager, store: RecordingStore
) -> None:
    _, b, sid = cached_on_b(make)
    b.housekeep()
    calls = store.stats.calls
    for _ in range(3):
        assert on(b, sid) == {"user": "alice"}
    assert store.stats.calls == calls and b.stats()["feed_catch_ups"] == 0


def test_a_stale_feed_is_read_before_a_cache_hit_is_trusted(
    make: MakeManager, clock: sk.FakeClock
) -> None:
    a, b, sid = cached_on_b(make)
    with a.request(app="shop", session_id=sid) as s:
        s.invalidate()
    # b's housekeeping is late (a busy or stopped thread): past the bound, a hit reads first.
    clock.advance(2 * b.settings.flush_poll_s + b.store.timeout_s + 0.1)
    assert on(b, sid) == {}
    assert b.stats()["feed_catch_ups"] == 1 and b.stats()["feed_dropped"] == 1


def test_within_the_bound_a_hit_does_not_wait_for_the_feed(
    make: MakeManager, clock: sk.FakeClock
) -> None:
    _, b, sid = cached_on_b(make)
    clock.advance(2 * b.settings.flush_poll_s)
    assert on(b, sid) == {"user": "alice"} and b.stats()["feed_catch_ups"] == 0


def test_a_node_starts_from_the_feeds_end(make: MakeManager, store: RecordingStore) -> None:
    a = make(node="a")
    for _ in range(3):
        with a.request(app="shop", session_id=new_session(a)) as s:
            s.invalidate()
    b = make(node="b")
    sid = new_session(b)
    assert store.invalidations_since(None)[1] != "0"
    b.housekeep()  # reads nothing older than its start
    assert b.stats()["feed_dropped"] == 0 and on(b, sid) == {"k": 0}


def test_a_cached_copy_is_served_when_neither_the_feed_nor_the_store_can_be_read(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    _, b, sid = cached_on_b(make, outage_backoff_s=0)
    clock.advance(60)
    store.down = True
    assert on(b, sid) == {"user": "alice"}  # the outage rules: cached sessions keep answering
    assert b.stats()["unverified_hits"] == 1


class CutOff(Store):
    """One node's view of a shared store that can be cut off from it (a network partition)."""

    transient_errors = (Outage,)

    def __init__(self, shared: MemoryStore) -> None:
        super().__init__(retry=RetryPolicy(attempts=1), sleep=lambda _s: None)
        self.shared, self.cut = shared, False

    def _up(self) -> MemoryStore:
        if self.cut:
            raise Outage("cut off")
        return self.shared

    def _load(self, app: str, token: str) -> StoredSession | None:
        return self._up()._load(app, token)

    def _save_batch(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        return self._up()._save_batch(requests)

    def _touch_batch(self, touches: Sequence[Touch]) -> None:
        self._up()._touch_batch(touches)

    def _delete(self, app: str, token: str, tombstone_until: float) -> bool:
        return self._up()._delete(app, token, tombstone_until)

    def _invalidations_since(
        self, cursor: str | None, limit: int
    ) -> tuple[list[Invalidation], str]:
        return self._up()._invalidations_since(cursor, limit)

    def _sessions_of(self, app: str, owner: str) -> list[StoredSession]:
        return self._up()._sessions_of(app, owner)

    def _list_sessions(self, app: str, after: str | None, limit: int) -> list[StoredSession]:
        return self._up()._list_sessions(app, after, limit)

    def _delete_expired(self, before: float, limit: int) -> list[ExpiredSession]:
        return self._up()._delete_expired(before, limit)

    def _counts(self, now: float) -> dict[str, AppCounts]:
        return self._up()._counts(now)

    def _close(self) -> None:
        pass


def test_a_copy_cut_off_past_its_tombstone_never_writes_the_session_back(
    make: MakeManager, clock: sk.FakeClock
) -> None:
    """The issue's resurrection: B keeps serving its copy while A logs out; the tombstone is swept;
    B's next write finds no row. Re-creating it needs B to have known it live within its
    timeout, which it did not."""
    shared = MemoryStore()
    view = CutOff(shared)
    a = make(node="a", store=shared, timeout_s=600, outage_backoff_s=0)
    b = make(node="b", store=view, timeout_s=600, outage_backoff_s=0, on_write_failure="defer")
    sid = new_session(a, user="alice")
    assert on(b, sid) == {"user": "alice"}
    view.cut = True
    with a.request(app="shop", session_id=sid) as s:
        s.invalidate()
    for n in range(8):  # B keeps its copy alive, changed, for longer than the tombstone lives
        clock.advance(120)
        on(b, sid, n=n)
    a.sweep()
    assert shared.load("shop", token(sid)) is None and b.stats()["dirty"] == 1
    view.cut = False
    assert on(b, sid) == {}  # checked against the store first, not trusted
    b.flush()
    assert shared._rows.get(("shop", token(sid))) is None  # no row came back
    assert b.stats()["not_recreated"] == 1 and b.stats()["recreated"] == 0


def test_a_row_the_store_lost_is_still_written_again_by_a_node_that_served_it_lately(
    make: MakeManager, store: RecordingStore
) -> None:
    a = make(node="a", write=sk.Manual())
    sid = new_session(a, user="alice")
    a.flush()
    store._rows.clear()  # a Redis restart without persistence: no row, no tombstone
    on(a, sid, user="bob")
    a.flush()
    assert a.stats()["recreated"] == 1
    assert store.raw("shop", token(sid)).attributes["user"] == b'"bob"'  # type: ignore[union-attr]


def test_on_an_event_loop_a_stale_feed_sends_the_hit_to_a_worker_thread(
    make: MakeManager, clock: sk.FakeClock
) -> None:
    _, b, sid = cached_on_b(make)
    own = f"{token(sid)}.b"
    fresh = b.lifecycle.begin_cached("shop", own)
    assert fresh is not None  # fresh: served on the loop, no store I/O
    b.lifecycle.end_request(fresh, ok=True)
    clock.advance(2 * b.settings.flush_poll_s + b.store.timeout_s + 0.1)
    assert b.lifecycle.begin_cached("shop", own) is None  # the feed must be read first
    b.housekeep()
    again = b.lifecycle.begin_cached("shop", own)
    assert again is not None and again.session["user"] == "alice"
    b.lifecycle.end_request(again, ok=True)
