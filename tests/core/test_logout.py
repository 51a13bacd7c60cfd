"""Logout everywhere: ``manager.sessions_of`` and ``manager.invalidate_owner``, on one node and
across two managers sharing one store."""

from __future__ import annotations

import sessionkeeper as sk

from .conftest import MakeManager, RecordingStore


def token(sid: str) -> str:
    return sid.split(".")[0]


def login(m: sk.SessionManager, owner: str | None, app: str = "shop", **attrs: object) -> str:
    with m.request(app=app, owner=owner) as s:
        s.update(attrs or {"user": owner})
        return s.id


class Destroyed(sk.SessionListener):
    def __init__(self) -> None:
        self.events: list[sk.SessionEvent] = []

    def session_destroyed(self, event: sk.SessionEvent) -> None:
        self.events.append(event)


def test_sessions_of_lists_what_the_store_holds(make: MakeManager) -> None:
    m = make()
    mine = sorted(token(login(m, "alice")) for _ in range(3))
    login(m, "bob")
    login(m, "alice", app="blog")
    assert [s.token for s in m.sessions_of("shop", "alice")] == mine
    assert all(s.owner == "alice" for s in m.sessions_of("shop", "alice"))
    assert m.sessions_of("shop", "nobody") == []


def test_invalidate_owner_ends_each_session_once_and_drops_cached_copies(
    make: MakeManager, store: RecordingStore
) -> None:
    a, b = make(node="a"), make(node="b")
    heard_a, heard_b = Destroyed(), Destroyed()
    a.add_listener(heard_a)
    b.add_listener(heard_b)
    here = login(a, "alice", cart=[1])
    there = login(b, "alice")
    bob = login(a, "bob")
    assert a.invalidate_owner("shop", "alice") == 2
    assert store.raw("shop", token(here)) is None and store.raw("shop", token(there)) is None
    assert sorted(e.token for e in heard_a.events) == sorted([token(here), token(there)])
    assert {e.reason for e in heard_a.events} == {sk.DestroyReason.INVALIDATED}
    cached = [e.session for e in heard_a.events if e.token == token(here)]
    assert cached[0] is not None  # the event carries this node's cached copy
    assert heard_b.events == []
    assert a.stats()["invalidated"] == 2
    with a.request(app="shop", session_id=here) as s:  # the cached copy is not served
        assert "cart" not in s and s.token != token(here)
    with a.request(app="shop", session_id=bob) as s:
        assert s["user"] == "bob"
    assert a.invalidate_owner("shop", "alice") == 0
    assert len(heard_a.events) == 2


def test_a_request_in_flight_goes_on_with_a_new_session(
    make: MakeManager, store: RecordingStore
) -> None:
    a, b = make(node="a"), make(node="b")
    sid = login(a, "alice", n=1)
    with b.request(app="shop", session_id=sid) as s:
        b.invalidate_owner("shop", "alice")
        s["n"] = 2  # b's request held the session when the logout came
    assert s.token != token(sid) and store.raw("shop", token(sid)) is None
    with a.request(app="shop", session_id=f"{token(sid)}.b") as s:
        assert "n" not in s


def test_this_nodes_unwritten_session_of_the_owner_is_ended(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(write=sk.Manual(), save_on_create=False)
    sid = login(m, "alice", n=1)
    assert store.raw("shop", token(sid)) is None  # not written yet
    assert m.invalidate_owner("shop", "alice") == 1
    with m.request(app="shop", session_id=sid) as s:
        assert "n" not in s
    m.flush()
    assert store.raw("shop", token(sid)) is None


def test_the_other_nodes_cached_copy_is_refused_after_its_housekeeping(
    make: MakeManager, clock: sk.FakeClock
) -> None:
    a, b = make(node="a"), make(node="b")
    other = login(b, "alice", secret="b's")  # cached on b; b's id names b (sticky)
    login(a, "alice")
    a.invalidate_owner("shop", "alice")
    clock.advance(b.settings.flush_poll_s)
    b.housekeep()  # reads the feed of tombstones
    with b.request(app="shop", session_id=other) as s:
        assert "secret" not in s and s.token != token(other)
