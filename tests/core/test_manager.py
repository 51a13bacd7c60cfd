"""The request lifecycle: ids, affinity and failover, apps, rotation, invalidation, owners,
failed requests."""

from __future__ import annotations

import logging

import pytest

import sessionkeeper as sk
from sessionkeeper import ids

from .conftest import MakeManager, RecordingStore, held, new_session


def token(sid: str) -> str:
    return sid.split(".")[0]


# -- ids --------------------------------------------------------------------------------------


def test_ids_are_at_least_128_bits_and_name_the_node(make: MakeManager) -> None:
    m = make(node="n1")
    seen = set()
    for _ in range(200):
        sid = new_session(m)
        tok, dot, node = sid.partition(".")
        assert dot and node == "n1"
        assert len(tok) * 6 >= 128 and ids.parse(sid) == (tok, "n1")
        seen.add(tok)
    assert len(seen) == 200


def test_node_name_default_is_per_process(make: MakeManager) -> None:
    import os

    m = make(node=None)
    assert m.node.endswith(f"-{os.getpid()}") and ids.parse("x" * 22 + "." + m.node)


# -- affinity and failover --------------------------------------------------------------------


def test_id_naming_another_node_is_loaded_from_the_store(
    make: MakeManager, store: RecordingStore
) -> None:
    a, b = make(node="a"), make(node="b")
    sid = new_session(a, n=1)
    loads = len(store.loads)
    with held(b, app="shop", session_id=sid) as (hold, s):
        assert s["n"] == 1
        s["n"] = 2
    assert len(store.loads) == loads + 1
    assert s.id == f"{token(sid)}.b" and b.lifecycle.cookie_action(hold) == "set"
    st = b.stats()
    assert st["failovers"] == 1 and st["affinity_breaks"] == 1
    # back on a with b's id: a must not trust its stale cached copy
    with a.request(app="shop", session_id=s.id) as s2:
        assert s2["n"] == 2
    assert a.stats()["failovers"] == 1


def test_sticky_requests_are_cache_hits(make: MakeManager, store: RecordingStore) -> None:
    m = make()
    sid = new_session(m, n=1)
    loads = len(store.loads)
    for _ in range(5):
        with held(m, app="shop", session_id=sid) as (hold, s):
            assert s["n"] == 1
        assert m.lifecycle.cookie_action(hold) is None
    assert len(store.loads) == loads and m.stats()["cache_hits"] == 5


@pytest.mark.parametrize("policy", [sk.TimeBased(10), sk.AfterRequests(2), sk.Manual()])
def test_deferred_policy_warns_once_on_affinity_break(
    make: MakeManager, caplog: pytest.LogCaptureFixture, policy: sk.WritePolicy
) -> None:
    a, b = make(node="a", write=policy), make(node="b", write=policy)
    sids = [new_session(a) for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="sessionkeeper"):
        for sid in sids:
            with b.request(app="shop", session_id=sid):
                pass
    warnings = [r for r in caplog.records if "sticky" in r.getMessage()]
    assert len(warnings) == 1 and b.stats()["affinity_breaks"] == 3


def test_end_of_request_does_not_warn_on_affinity_break(
    make: MakeManager, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = make(node="a"), make(node="b")
    sid = new_session(a)
    with (
        caplog.at_level(logging.WARNING, logger="sessionkeeper"),
        b.request(app="shop", session_id=sid),
    ):
        pass
    assert not [r for r in caplog.records if "sticky" in r.getMessage()]


# -- apps -------------------------------------------------------------------------------------


def test_another_apps_id_is_not_adopted_by_default(make: MakeManager) -> None:
    """Fixation: an attacker plants the id of their own ``blog`` session in the victim's browser;
    the victim's new ``shop`` session must not take it, or the attacker could read it."""
    m = make()
    planted = new_session(m, app="blog", mine=1)
    with held(m, app="shop", session_id=planted) as (hold, s):
        s["card"] = "4111"
    assert token(s.id) != token(planted) and m.lifecycle.cookie_action(hold) == "set"
    with m.request(app="shop", session_id=planted) as s:
        assert "card" not in s


def test_sharing_ids_rotate_id_moves_every_app_off_the_planted_id(
    make: MakeManager, store: RecordingStore
) -> None:
    """With sharing on a planted id is adopted (one cookie for every app), so the login's
    rotate_id() must move every app's session off it: the attacker's id then names nothing,
    on this node or another, and the victim's new id still serves every app."""
    a, b = make(share_ids_across_apps=True), make(node="b", share_ids_across_apps=True)
    planted = new_session(a, app="blog", mine=1)
    with a.request(app="shop", session_id=planted) as s:
        s["cart"] = ["apple"]
        assert s.id == planted  # adopted: sharing is on
    with held(a, app="shop", session_id=planted) as (hold, s):
        s.rotate_id()
    new = s.id
    assert token(new) != token(planted) and a.lifecycle.cookie_action(hold) == "set"
    for m, node in ((a, "a"), (b, "b")):
        for app in ("shop", "blog"):
            with m.request(app=app, session_id=f"{token(planted)}.{node}") as s:
                assert len(s) == 0 and s.token != token(planted)
    assert store.raw("blog", token(planted)) is None and store.raw("shop", token(planted)) is None
    with a.request(app="blog", session_id=new) as s:
        assert dict(s) == {"mine": 1}
    with b.request(app="shop", session_id=new) as s:
        assert dict(s) == {"cart": ["apple"]}


def test_sharing_ids_rotate_id_moves_another_apps_session_found_only_in_the_store(
    make: MakeManager, store: RecordingStore
) -> None:
    a = make(share_ids_across_apps=True, cache_size=2)
    shared = new_session(a, app="blog", mine=1)
    with a.request(app="shop", session_id=shared) as s:
        s["cart"] = ["apple"]
    new_session(a, app="wiki")  # over capacity: blog's copy, the least recently used, goes
    assert a.stats()["evictions"] >= 1
    with a.request(app="shop", session_id=shared) as s:
        s.rotate_id()
    assert store.raw("blog", token(shared)) is None
    assert store.raw("blog", s.token).attributes == {"mine": b"1"}  # type: ignore[union-attr]


def test_sharing_ids_rotate_id_during_an_outage_keeps_this_apps_session(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(share_ids_across_apps=True)
    shared = new_session(m, app="blog", mine=1)
    with m.request(app="shop", session_id=shared) as s:
        s["cart"] = ["apple"]
    store.down = True
    with pytest.raises(sk.StoreUnavailable), m.request(app="shop", session_id=shared) as s:
        s.rotate_id()
    store.down = False
    with m.request(app="shop", session_id=shared) as s:  # the login can be retried
        assert s.id == shared and dict(s) == {"cart": ["apple"]}


def test_apps_share_an_id_but_not_data(make: MakeManager, store: RecordingStore) -> None:
    m = make(share_ids_across_apps=True)
    sid = new_session(m, app="shop", cart=["apple"])
    with held(m, app="blog", session_id=sid) as (hold, s):
        assert "cart" not in s
        s["draft"] = "hello"
    assert s.id == sid and m.lifecycle.cookie_action(hold) is None  # one cookie serves both apps
    with m.request(app="shop", session_id=sid) as s:
        assert dict(s) == {"cart": ["apple"]}
    assert set(store.raw("blog", token(sid)).attributes) == {"draft"}  # type: ignore[union-attr]


def test_app_timeouts(make: MakeManager, clock: sk.FakeClock) -> None:
    m = make(timeout_s=1000, app_timeouts_s={"shop": 100, "blog": 0})
    shop = new_session(m, app="shop")
    blog = new_session(m, app="blog")
    other = new_session(m, app="other")
    clock.advance(101)
    with m.request(app="shop", session_id=shop) as s:
        assert "k" not in s  # expired after the app's 100 s
    for app, sid in (("blog", blog), ("other", other)):  # 0 and absent: the manager's 1000 s
        with m.request(app=app, session_id=sid) as s:
            assert s["k"] == 0


def test_invalidating_one_app_leaves_the_others(make: MakeManager, store: RecordingStore) -> None:
    m = make(share_ids_across_apps=True)
    sid = new_session(m, app="shop", a=1)
    with m.request(app="blog", session_id=sid) as s:
        s["b"] = 2
    with m.request(app="shop", session_id=sid) as s:
        s.invalidate()
    assert store.raw("shop", token(sid)) is None
    with m.request(app="blog", session_id=sid) as s:
        assert s["b"] == 2


# -- rotate and invalidate --------------------------------------------------------------------


def test_rotate_id_keeps_data_and_tombstones_the_old_id(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make()
    old = new_session(m, cart=["apple"])
    with held(m, app="shop", session_id=old) as (hold, s):
        s.rotate_id()
        assert s["cart"] == ["apple"]
    new = s.id
    assert token(new) != token(old) and m.lifecycle.cookie_action(hold) == "set"
    assert store.raw("shop", token(old)) is None
    assert store.raw("shop", token(new)).attributes["cart"] == b'["apple"]'  # type: ignore[union-attr]
    for node in ("a", "b"):  # neither this node's cache nor another node brings it back
        mm = m if node == "a" else make(node="b")
        with mm.request(app="shop", session_id=f"{token(old)}.{node}") as s:
            assert len(s) == 0 and s.token != token(old)
    with m.request(app="shop", session_id=new) as s:
        assert s["cart"] == ["apple"]


def test_rotate_id_of_a_new_session(make: MakeManager, store: RecordingStore) -> None:
    m = make()
    with m.request(app="shop") as s:
        s["a"] = 1
        first = s.token
        s.rotate_id()
    assert s.token != first and store.raw("shop", s.token) is not None
    assert store.raw("shop", first) is None


def test_invalidate_fires_destroyed_deletes_and_leaves_a_tombstone(
    make: MakeManager, store: RecordingStore
) -> None:
    events: list[sk.SessionEvent] = []

    class L(sk.SessionListener):
        def session_destroyed(self, event: sk.SessionEvent) -> None:
            events.append(event)

    a, b = make(node="a"), make(node="b")
    a.add_listener(L())
    sid = new_session(a, n=1)
    with b.request(app="shop", session_id=sid) as stale:  # b caches a copy
        assert stale["n"] == 1
    with held(a, app="shop", session_id=sid) as (hold, s):
        s.invalidate()
        assert len(s) == 0
    assert [(e.token, e.reason) for e in events] == [(token(sid), sk.DestroyReason.INVALIDATED)]
    assert store.raw("shop", token(sid)) is None
    assert a.lifecycle.cookie_action(hold) == "delete"
    # b writes its stale copy afterwards: refused, and the id stays dead everywhere
    with b.request(app="shop", session_id=f"{token(sid)}.b") as s2:
        s2["n"] = 99
    assert store.raw("shop", token(sid)) is None
    assert b.stats()["gone_on_write"] == 1
    for mgr, node in ((a, "a"), (b, "b"), (a, "b")):
        with mgr.request(app="shop", session_id=f"{token(sid)}.{node}") as s3:
            assert "n" not in s3 and s3.token != token(sid)
    assert len(events) == 1


def test_invalidated_session_object_can_be_reused_in_the_same_request(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make()
    sid = new_session(m, user="alice")
    with held(m, app="shop", session_id=sid) as (hold, s):
        s.invalidate()
        s["flash"] = "logged out"
    assert s.token != token(sid) and m.lifecycle.cookie_action(hold) == "set"
    assert dict(store.raw("shop", s.token).attributes) == {"flash": b'"logged out"'}  # type: ignore[union-attr]


# -- owner binding ----------------------------------------------------------------------------


def test_owner_binding(make: MakeManager) -> None:
    a, b = make(node="a"), make(node="b")
    with a.request(app="shop", owner="alice") as s:
        s["secret"] = 1
    sid = s.id
    with a.request(app="shop", session_id=sid, owner="alice") as s:
        assert s["secret"] == 1
    for mgr in (a, b):  # cached or loaded from the store
        with mgr.request(app="shop", session_id=sid, owner="bob") as s:
            assert "secret" not in s and s.token != token(sid)
    assert a.stats()["owner_mismatches"] == 1 and b.stats()["owner_mismatches"] == 1


def test_owner_set_at_login_is_stored(make: MakeManager, store: RecordingStore) -> None:
    m = make()
    sid = new_session(m)
    with m.request(app="shop", session_id=sid) as s:
        s.rotate_id()
        s.owner = "alice"
    assert store.raw("shop", s.token).owner == "alice"  # type: ignore[union-attr]
    with make(node="b").request(app="shop", session_id=s.id, owner="bob") as s2:
        assert s2.token != s.token


# -- failed requests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [sk.EndOfRequest(), sk.TimeBased(10), sk.AfterRequests(1), sk.Manual()],
    ids=lambda p: p.spec(),
)
def test_failed_request_rolls_back_and_writes_nothing(
    make: MakeManager, store: RecordingStore, policy: sk.WritePolicy
) -> None:
    m = make(write=policy)
    sid = new_session(m, n=1, keep="x")
    written = store.written
    with pytest.raises(RuntimeError), m.request(app="shop", session_id=sid) as s:
        s["n"] = 2
        s["new"] = 1
        del s["keep"]
        raise RuntimeError("boom")
    assert dict(s) == {"n": 1, "keep": "x"}
    assert store.written == written
    m.flush()
    assert store.written == written
    assert m.stats()["reverted_requests"] == 1


def test_a_base_exception_in_the_block_rolls_back_too(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make()
    sid = new_session(m, n=1)
    written = store.written
    with pytest.raises(KeyboardInterrupt), m.request(app="shop", session_id=sid) as s:
        s["n"] = 2
        raise KeyboardInterrupt
    assert dict(s) == {"n": 1} and not s.in_use
    assert store.written == written


def test_a_request_scope_is_entered_once(make: MakeManager) -> None:
    m = make()
    scope = m.request(app="shop")
    with scope as s:
        s["n"] = 1
    with pytest.raises(RuntimeError), scope:
        pass
    assert not s.in_use and m.stats()["live"] == 1


def test_failed_first_request_creates_nothing(make: MakeManager, store: RecordingStore) -> None:
    m = make()
    with pytest.raises(RuntimeError), held(m, app="shop") as (hold, s):
        s["a"] = 1
        raise RuntimeError
    m.flush()
    assert store.written == 0 and m.stats()["live"] == 0
    assert m.lifecycle.cookie_action(hold) is None


def test_failed_request_after_an_immediate_write_restores_the_store(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(write=sk.OnAttribute())
    sid = new_session(m, n=1)
    with pytest.raises(RuntimeError), m.request(app="shop", session_id=sid) as s:
        s["n"] = 2
        assert store.raw("shop", token(sid)).attributes["n"] == b"2"  # type: ignore[union-attr]
        raise RuntimeError
    assert store.raw("shop", token(sid)).attributes["n"] == b"1"  # type: ignore[union-attr]
