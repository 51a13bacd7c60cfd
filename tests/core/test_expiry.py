"""Timeouts, the sweep and its grace, destroyed events exactly once, sweep hours."""

from __future__ import annotations

import time
from pathlib import Path

import sessionkeeper as sk

from .conftest import MakeManager, RecordingStore, new_session


class Destroyed(sk.SessionListener):
    def __init__(self) -> None:
        self.events: list[sk.SessionEvent] = []

    def session_destroyed(self, event: sk.SessionEvent) -> None:
        self.events.append(event)


def token(sid: str) -> str:
    return sid.split(".")[0]


def test_session_expires_after_its_timeout(make: MakeManager, clock: sk.FakeClock) -> None:
    m = make(timeout_s=100)
    sid = new_session(m, n=1)
    clock.advance(100)
    with m.request(app="shop", session_id=sid) as s:
        assert s["n"] == 1  # exactly the timeout: still alive (now - last > timeout)
    clock.advance(100.5)
    with m.request(app="shop", session_id=sid) as s:
        assert "n" not in s


def test_grace_is_at_least_the_policy_interval_and_save_period(make: MakeManager) -> None:
    m = make(write=sk.TimeBased(interval_s=120), save_period_s=60)
    assert m.sweep_grace_s >= 120
    m = make(write=sk.TimeBased(interval_s=10), save_period_s=90)
    assert m.sweep_grace_s >= 90
    m = make(sweep_grace_s=1000)
    assert m.sweep_grace_s >= 1000


def test_sweep_deletes_only_rows_expired_more_than_the_grace_ago(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    m = make(timeout_s=100, save_period_s=60, flush_poll_s=1)
    grace = m.sweep_grace_s
    sid = new_session(m)
    clock.advance(100 + grace - 1)
    assert m.sweep() == 0 and store.raw("shop", token(sid)) is not None
    clock.advance(2)
    assert m.sweep() == 1 and store.raw("shop", token(sid)) is None
    assert m.stats()["timed_out"] == 1


def test_session_kept_alive_on_another_node_is_not_swept(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    policy = sk.TimeBased(interval_s=30)
    a = make(node="a", timeout_s=100, write=policy, save_period_s=60)
    b = make(node="b", timeout_s=100, write=policy, save_period_s=60)
    sid = new_session(a, n=0)
    for _ in range(30):  # 30 * 20 s = 600 s of reads on a, its touches lagging
        clock.advance(20)
        with a.request(app="shop", session_id=sid) as s:
            _ = s["n"]
        a.housekeep()
        assert b.sweep() == 0
    assert store.raw("shop", token(sid)) is not None


def test_destroyed_fires_exactly_once_across_two_nodes(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    la, lb = Destroyed(), Destroyed()
    a, b = make(node="a", timeout_s=100), make(node="b", timeout_s=100)
    a.add_listener(la)
    b.add_listener(lb)
    sids = [new_session(a) for _ in range(20)]
    for sid in sids[:10]:
        with b.request(app="shop", session_id=sid):
            pass
    clock.advance(100 + max(a.sweep_grace_s, b.sweep_grace_s) + 1)
    import threading

    ts = [threading.Thread(target=m.sweep) for m in (a, b, a, b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(10)
    fired = [e.token for e in la.events + lb.events]
    assert sorted(fired) == sorted(token(s) for s in sids)
    assert all(e.reason is sk.DestroyReason.TIMED_OUT for e in la.events + lb.events)
    assert a.stats()["timed_out"] + b.stats()["timed_out"] == 20


def sweep_ten_alternating(a: sk.SessionManager, b: sk.SessionManager, clock: sk.FakeClock) -> int:
    """Ten sessions created alternately on nodes ``a`` and ``b`` of one store (deferred policy:
    each node keeps its sessions' last change unwritten), the clock moved past their timeout and
    grace, both nodes sweeping and flushing in turn, and once sweeping at the same time. Returns
    how many ``session_destroyed`` events the two fired: the store's delete decides, so 10."""
    import threading

    la, lb = Destroyed(), Destroyed()
    a.add_listener(la)
    b.add_listener(lb)
    sids = [new_session((a, b)[i % 2]) for i in range(10)]
    for i, sid in enumerate(sids):
        with (a, b)[i % 2].request(app="shop", session_id=sid) as s:
            s["k"] = 1  # left for the flusher
    with b.request(app="shop", session_id=sids[0]):
        pass  # one cached on both nodes
    clock.advance(100 + max(a.sweep_grace_s, b.sweep_grace_s) + 1)
    a.sweep()  # deletes all ten rows; b still caches its five expired copies
    b.flush_due()
    b.flush()  # b's expired copies, whose rows are gone, must not come back
    ts = [threading.Thread(target=m.sweep) for m in (a, b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    a.flush()
    b.sweep()
    fired = [e.token for e in la.events + lb.events]
    assert sorted(fired) == sorted(token(s) for s in sids), len(fired)
    assert a.stats()["timed_out"] + b.stats()["timed_out"] == 10
    assert a.stats()["live"] == b.stats()["live"] == 0
    return len(fired)


def test_destroyed_fires_once_per_session_on_a_shared_sqlite_store(
    tmp_path: Path, clock: sk.FakeClock
) -> None:
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    a, b = (
        sk.SessionManager(url, node=n, clock=clock, timeout_s=100, housekeeping=False) for n in "ab"
    )
    try:
        assert sweep_ten_alternating(a, b, clock) == 10
    finally:
        a.close(deadline_s=0)
        b.close(deadline_s=0)


def test_sweep_small_batches(make: MakeManager, store: RecordingStore, clock: sk.FakeClock) -> None:
    m = make(timeout_s=10, sweep_batch=3)
    for _ in range(10):
        new_session(m)
    clock.advance(10 + m.sweep_grace_s + 1)
    assert m.sweep() == 10 and store.count(now=clock.time()) == 0


def _local_hour(epoch: float) -> int:
    return time.localtime(epoch).tm_hour


def test_housekeeping_sweeps_every_interval_within_sweep_hours(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    hour = _local_hour(clock.time())
    inside = make(timeout_s=10, sweep_interval_s=300, sweep_hours=(hour, (hour + 1) % 24))
    outside = make(
        node="b",
        timeout_s=10,
        sweep_interval_s=300,
        sweep_hours=((hour + 2) % 24, (hour + 3) % 24),
    )
    new_session(inside)
    clock.advance(299)
    inside.housekeep()
    outside.housekeep()
    assert inside.stats()["sweeps"] == 0
    clock.advance(2)
    outside.housekeep()
    assert outside.stats()["sweeps"] == 0  # not within its hours
    inside.housekeep()
    if _local_hour(clock.time()) == hour:
        assert inside.stats()["sweeps"] == 1 and inside.stats()["timed_out"] == 1


def test_within_hours_wraps_past_midnight() -> None:
    from sessionkeeper.housekeeping import within_hours

    t = time.mktime((2024, 1, 1, 23, 30, 0, 0, 0, -1))
    assert within_hours((22, 4), t) and not within_hours((1, 22), t)
    assert within_hours(None, t)
    t2 = time.mktime((2024, 1, 1, 3, 0, 0, 0, 0, -1))
    assert within_hours((22, 4), t2) and not within_hours((4, 22), t2)


def test_expired_cached_session_is_dropped_by_the_sweep(
    make: MakeManager, clock: sk.FakeClock
) -> None:
    m = make(timeout_s=10)
    new_session(m)
    clock.advance(11)
    m.sweep()
    assert m.stats()["live"] == 0
