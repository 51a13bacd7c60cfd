"""The absolute lifetime: ``max_lifetime_s`` (per app) and a per-session deadline, besides the
idle timeout; accesses never extend it, and a deadline not in the future ends the session now."""

from __future__ import annotations

from pathlib import Path

import pytest

import sessionkeeper as sk

from .conftest import MakeManager, RecordingStore, new_session


def token(sid: str) -> str:
    return sid.split(".")[0]


def test_accesses_do_not_extend_the_max_lifetime(make: MakeManager, clock: sk.FakeClock) -> None:
    m = make(timeout_s=100, max_lifetime_s=300)
    sid = new_session(m, n=1)
    for _ in range(5):  # used every 50 s: never idle for 100 s
        clock.advance(50)
        with m.request(app="shop", session_id=sid) as s:
            assert s["n"] == 1
    clock.advance(50)  # 300 s old
    with m.request(app="shop", session_id=sid) as s:
        assert "n" not in s


def test_an_app_has_its_own_max_lifetime(make: MakeManager, clock: sk.FakeClock) -> None:
    m = make(timeout_s=1000, max_lifetime_s=100, app_max_lifetimes_s={"bank": 50})
    shop, bank = new_session(m, "shop", n=1), new_session(m, "bank", n=1)
    clock.advance(60)
    with m.request(app="shop", session_id=shop) as s:
        assert s["n"] == 1
    with m.request(app="bank", session_id=bank) as s:
        assert "n" not in s


@pytest.mark.parametrize("bad", [0, -1, "10"])
def test_max_lifetimes_are_validated(make: MakeManager, bad: object) -> None:
    with pytest.raises(sk.ConfigurationError):
        make(max_lifetime_s=bad)
    with pytest.raises(sk.ConfigurationError):
        make(app_max_lifetimes_s={"shop": bad})


def test_a_per_session_deadline_is_written_and_holds_on_another_node(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    a, b = make(node="a", timeout_s=1000), make(node="b", timeout_s=1000)
    sid = new_session(a, n=1)
    with a.request(app="shop", session_id=sid) as s:
        s.set_absolute_expiry(clock.time() + 100)
    stored = store.raw("shop", token(sid))
    assert stored is not None and stored.absolute_expires_at == clock.time() + 100
    assert stored.expires_at == clock.time() + 100  # what sweeps index: the earlier one
    clock.advance(99)
    with b.request(app="shop", session_id=sid) as s:
        assert s["n"] == 1
    clock.advance(2)
    with b.request(app="shop", session_id=sid) as s:
        assert "n" not in s


def test_the_deadline_is_swept(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    m = make(timeout_s=10_000, max_lifetime_s=100)
    sid = new_session(m)
    clock.advance(100 + m.sweep_grace_s + 1)
    assert m.sweep() == 1 and store.raw("shop", token(sid)) is None


def test_a_deadline_in_the_past_ends_the_session_now(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    m = make()
    sid = new_session(m, n=1)
    with m.request(app="shop", session_id=sid) as s:
        s.set_absolute_expiry(clock.time() - 1)
        assert "n" not in s and token(s.id) != token(sid)
    assert store.load("shop", token(sid)) is None  # tombstoned, as by invalidate()
    with m.request(app="shop", session_id=sid) as s:
        assert "n" not in s


def test_a_new_session_after_an_invalidation_gets_a_fresh_lifetime(
    make: MakeManager, clock: sk.FakeClock
) -> None:
    m = make(timeout_s=1000, max_lifetime_s=100)
    sid = new_session(m, n=1)
    clock.advance(90)
    with m.request(app="shop", session_id=sid) as s:
        s.invalidate()
        s["n"] = 2
        sid = s.id
    clock.advance(50)  # 140 s after the first session began, 50 s into the new one
    with m.request(app="shop", session_id=sid) as s:
        assert s["n"] == 2


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
@pytest.mark.parametrize("how", ["invalidate", "invalidate_owner"])
def test_a_tombstone_and_its_feed_entry_end_with_the_deadline_not_the_idle_timeout(
    tmp_path: Path, url: str, how: str
) -> None:
    """No copy of a session outlives its deadline, so neither need its tombstone nor the feed's
    entry: both go at min(idle expiry, deadline) + grace, on every store (the feed is pruned
    with the tombstones), not after the whole idle timeout."""
    clock = sk.FakeClock()
    if url == "sqlite":
        url = f"sqlite:///{tmp_path / 'sessions.db'}"
    m = sk.SessionManager(url, clock=clock, housekeeping=False, timeout_s=5000, max_lifetime_s=100)
    try:
        with m.request(app="shop", owner="ann") as s:
            s["n"] = 1
        _, cursor = m.store.invalidations_since(None)
        clock.advance(10)
        if how == "invalidate":
            with m.request(app="shop", session_id=s.id, owner="ann") as s:
                s.invalidate()
        else:
            assert m.invalidate_owner("shop", "ann") == 1
        assert len(m.store.invalidations_since(cursor)[0]) == 1
        clock.advance(90 + m.sweep_grace_s + 1)  # past the deadline + grace, 4,900 s before idle
        m.store.delete_expired(before=clock.time())
        assert m.store.invalidations_since(cursor)[0] == []
    finally:
        m.close()
