"""A store that fails for a while: cached sessions keep working, nothing dirty is lost,
uncached sessions get 503 with Retry-After."""

from __future__ import annotations

from typing import Any

import pytest

import sessionkeeper as sk
from sessionkeeper.wsgi import SessionMiddleware

from .conftest import MakeManager, Outage, RecordingStore, new_session
from .wsgi_util import call, environ


def token(sid: str) -> str:
    return sid.split(".")[0]


def counter_app(env: dict[str, Any], start_response: Any) -> list[bytes]:
    s = env["sessionkeeper.session"]
    s["n"] = s.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(s["n"]).encode()]


@pytest.mark.parametrize(
    "policy", [sk.EndOfRequest(), sk.TimeBased(10), sk.OnAttribute()], ids=lambda p: p.spec()
)
def test_cached_sessions_keep_working_and_nothing_dirty_is_lost(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock, policy: sk.WritePolicy
) -> None:
    m = make(write=policy, on_write_failure="defer")
    sids = [new_session(m, n=0) for _ in range(4)]
    store.down = True
    for _round in range(3):
        clock.advance(11)
        for sid in sids:
            with m.request(app="shop", session_id=sid) as s:
                s["n"] = s["n"] + 1
        m.housekeep()  # fails, logs, keeps everything dirty
    with m.request(app="shop") as s:
        s["born"] = "during the outage"
    fresh = s.token
    st = m.stats()
    assert st["write_failures"] > 0 and st["dirty"] == 5
    assert store.stats.available is False
    store.down = False
    m.flush()
    assert m.stats()["dirty"] == 0 and store.stats.available is True
    for sid in sids:
        assert store.raw("shop", token(sid)).attributes["n"] == b"3"  # type: ignore[union-attr]
    assert store.raw("shop", fresh).attributes["born"] == b'"during the outage"'  # type: ignore[union-attr]


def test_sync_during_an_outage_raises_and_keeps_the_change(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(write=sk.Manual())
    sid = new_session(m, n=0)
    store.down = True
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 1
        with pytest.raises(sk.StoreUnavailable):
            s.sync()
    store.down = False
    m.flush()
    assert store.raw("shop", token(sid)).attributes["n"] == b"1"  # type: ignore[union-attr]


def test_uncached_session_gets_503_with_retry_after(
    make: MakeManager, store: RecordingStore
) -> None:
    a, b = make(node="a", on_write_failure="defer"), make(node="b", retry_after_s=7)
    sid = new_session(a, n=1)
    app = SessionMiddleware(counter_app, b, "shop")
    store.down = True
    resp = call(app, environ(cookie=f"sessionid={sid}"))
    assert resp.status == 503 and resp.header("Retry-After") == ["7"]
    assert resp.cookie is None
    assert b.stats()["unavailable"] == 1
    # a cached session on a still works through the middleware
    resp = call(SessionMiddleware(counter_app, a, "shop"), environ(cookie=f"sessionid={sid}"))
    assert resp.status == 200 and resp.body == b"2"
    store.down = False
    a.flush()  # a's write failed during the outage; it goes out now
    resp = call(app, environ(cookie=f"sessionid={sid}"))
    assert resp.status == 200 and resp.body == b"3"


def test_failed_touch_does_not_undo_a_successful_save_in_the_same_batch(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    class TouchFails(RecordingStore):
        def _touch_batch(self, touches: Any) -> None:
            raise Outage("touch lost")

    st = TouchFails()
    m = make(store=st, write=sk.Manual(), save_period_s=1)
    changed, read_only = new_session(m, n=0), new_session(m, n=0)
    clock.advance(5)
    with m.request(app="shop", session_id=changed) as s:
        s["n"] = 1
    with m.request(app="shop", session_id=read_only) as s:
        _ = s["n"]
    m._rt.write(
        [m._cache.get(("shop", token(changed))), m._cache.get(("shop", token(read_only)))],  # type: ignore[list-item]
        immediate=False,
    )
    assert st.raw("shop", token(changed)).attributes["n"] == b"1"  # type: ignore[union-attr]
    assert m.stats()["dirty"] == 0  # the save succeeded: not put back
    with m.request(app="shop", session_id=changed) as s:
        s["n"] = 2
        s.sync()  # at the version the first save returned: no conflict with itself
    assert st.stats.conflicts_merged == 0


def test_inline_writes_pause_after_a_failure_and_nothing_is_lost(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(write=sk.EndOfRequest(), outage_backoff_s=3600, on_write_failure="defer")
    sids = [new_session(m, n=0) for _ in range(3)]
    store.down = True
    calls_before = store.stats.calls
    for sid in sids:
        with m.request(app="shop", session_id=sid) as s:
            s["n"] = 1
    # The first request paid the retries; the others were served without touching the store.
    assert store.stats.calls - calls_before == store.retry.attempts
    assert m.stats()["writes_deferred"] == 2
    assert m.stats()["dirty"] == 3
    store.down = False
    m.flush()  # the flusher does not pause: it is how recovery is found
    for sid in sids:
        assert store.raw("shop", token(sid)).attributes["n"] == b"1"  # type: ignore[union-attr]


def test_without_a_pause_every_request_tries_the_store(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(write=sk.EndOfRequest(), outage_backoff_s=0, on_write_failure="defer")
    sids = [new_session(m, n=0) for _ in range(3)]
    store.down = True
    calls_before = store.stats.calls
    for sid in sids:
        with m.request(app="shop", session_id=sid) as s:
            s["n"] = 1
    assert store.stats.calls - calls_before == 3 * store.retry.attempts
    assert m.stats()["writes_deferred"] == 0


@pytest.mark.parametrize("policy", [sk.EndOfRequest(), sk.Manual()], ids=lambda p: p.spec())
def test_a_session_the_store_lost_is_written_again_from_the_cache(
    make: MakeManager, store: RecordingStore, policy: sk.WritePolicy
) -> None:
    m = make(write=policy)
    sid = new_session(m, n=1, name="ada")
    m.flush()
    store._rows.clear()  # the store lost its data (say, Redis restarted without persistence)
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 2
    m.flush()
    stored = store.raw("shop", token(sid))
    assert stored is not None
    assert dict(stored.attributes) == {"n": b"2", "name": b'"ada"'}
    assert m.stats()["recreated"] == 1 and m.stats()["gone_on_write"] == 0


def test_an_invalidated_session_is_still_not_brought_back(
    make: MakeManager, store: RecordingStore
) -> None:
    a, b = make(node="a", write=sk.Manual()), make(node="b")
    sid = new_session(a, n=1)
    a.flush()
    with b.request(app="shop", session_id=sid) as s:
        s.invalidate()
    with a.request(app="shop", session_id=sid) as s:  # a's stale cached copy
        s["n"] = 2
    a.flush()
    assert store.raw("shop", token(sid)) is None
    assert a.stats()["gone_on_write"] == 1 and a.stats()["recreated"] == 0


@pytest.mark.parametrize(
    "policy",
    [sk.EndOfRequest(), sk.OnAttribute(), sk.AfterUpdates(1), sk.AfterRequests(1)],
    ids=lambda p: p.spec(),
)
def test_a_change_kept_dirty_by_a_failed_write_is_written_by_the_next_poll(
    make: MakeManager, store: RecordingStore, policy: sk.WritePolicy
) -> None:
    """Defect 12: these policies had no flush rule, so a change whose inline write failed waited
    for the session's next request, an eviction or a clean stop (kept dirty: "defer")."""
    m = make(write=policy, on_write_failure="defer")
    sid = new_session(m, n=0)
    store.down = True
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 1
    assert m.stats()["dirty"] == 1
    m.housekeep()  # still down: kept
    store.down = False
    m.housekeep()
    assert store.raw("shop", token(sid)).attributes["n"] == b"1"  # type: ignore[union-attr]
    assert m.stats()["dirty"] == 0


# -- defect 13: under the durable policies a change that cannot be made durable is refused --


@pytest.mark.parametrize("policy", [sk.EndOfRequest(), sk.OnAttribute()], ids=lambda p: p.spec())
@pytest.mark.parametrize("backoff_s", [0.0, 3600.0], ids=["retrying", "backing-off"])
def test_a_change_that_cannot_be_made_durable_is_refused_and_rolled_back(
    make: MakeManager, store: RecordingStore, policy: sk.WritePolicy, backoff_s: float
) -> None:
    m = make(write=policy, outage_backoff_s=backoff_s)
    sid = new_session(m, n=0)
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 1
    store.down = True
    if backoff_s:  # a failure seen first: requests then skip inline writes for a while
        with pytest.raises(sk.WriteRefused), m.request(app="shop", session_id=sid) as s:
            s["n"] = 2
    with pytest.raises(sk.WriteRefused) as refused, m.request(app="shop", session_id=sid) as s:
        s["n"] = 2
        s["extra"] = "x"
    assert refused.value.code == "write_refused"
    with m.request(app="shop", session_id=sid) as s:  # a read is served from the cache
        assert dict(s) == {"n": 1}
    assert m.stats()["dirty"] == 0 and m.stats()["refused_writes"] == 1 + bool(backoff_s)
    with pytest.raises(sk.WriteRefused), m.request(app="shop") as s:
        s["born"] = "during the outage"  # a new session that cannot be stored is not kept
    assert m.stats()["live"] == 1
    store.down = False
    m.flush()
    assert store.raw("shop", token(sid)).attributes == {"n": b"1"}  # type: ignore[union-attr]


def test_on_write_failure_defer_keeps_todays_behaviour_and_is_validated(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(write=sk.EndOfRequest(), on_write_failure="defer")
    sid = new_session(m, n=0)
    store.down = True
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 1  # acknowledged, kept dirty
    store.down = False
    m.housekeep()
    assert store.raw("shop", token(sid)).attributes["n"] == b"1"  # type: ignore[union-attr]
    assert make(write=sk.TimeBased(10)).settings.on_write_failure == "defer"
    assert make(write=sk.OnAttribute()).settings.on_write_failure == "refuse"
    with pytest.raises(sk.ConfigurationError):
        make(on_write_failure="ignore")
