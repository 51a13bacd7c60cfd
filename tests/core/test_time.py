"""Intervals on the monotonic clock, timestamps on the wall clock, every read through the
injected clock (issue 9, defect 7)."""

from __future__ import annotations

import pytest

import sessionkeeper as sk

from .conftest import MakeManager, RecordingStore, new_session


def test_fake_clock_steps_the_wall_clock_alone() -> None:
    clock = sk.FakeClock()
    wall, mono = clock.time(), clock.monotonic()
    clock.step_wall(-3600)
    assert clock.time() == wall - 3600 and clock.monotonic() == mono
    clock.step_wall(10)
    assert clock.time() == wall - 3590 and clock.monotonic() == mono
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_a_wall_clock_step_back_does_not_stall_time_based_flushes(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    m = make(write=sk.TimeBased(interval_s=10))
    sid = new_session(m, n=0)
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 1
    clock.advance(5)
    clock.step_wall(-3600)  # NTP corrects the wall clock by an hour, backwards
    clock.advance(5)
    m.housekeep()
    assert store.saves_of(sid.split(".")[0])[-1].changed == {"n": b"1"}
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 2
    clock.advance(10)
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 3  # due since the last write: written at the end of this request
    assert store.saves_of(sid.split(".")[0])[-1].changed == {"n": b"3"}


def test_a_wall_clock_step_back_does_not_stall_the_sweep(
    make: MakeManager, clock: sk.FakeClock
) -> None:
    m = make(sweep_interval_s=300)
    m.housekeep()
    clock.step_wall(-3600)
    clock.advance(301)
    m.housekeep()
    assert m.stats()["sweeps"] == 1
    clock.advance(301)
    m.housekeep()
    assert m.stats()["sweeps"] == 2


def test_the_stores_outage_backoff_follows_the_managers_clock(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    # A backoff no real test run outlives: only the fake clock can end it.
    m = make(write=sk.EndOfRequest(), outage_backoff_s=1000, on_write_failure="defer")
    sid = new_session(m, n=0)
    store.down = True
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 1  # the write fails: the store is failing from now on
    store.down = False
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 2
    assert m.stats()["writes_deferred"] == 1  # within the backoff: left to the flusher
    clock.advance(1001)
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 3
    assert m.stats()["writes_deferred"] == 1  # past it: written inline again
    assert store.raw("shop", sid.split(".")[0]).attributes["n"] == b"3"  # type: ignore[union-attr]


def test_store_count_defaults_to_the_managers_clock(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    m = make(timeout_s=100)
    new_session(m)
    assert m.store.count() == 1
    clock.advance(101)
    assert m.store.count() == 0  # the fake clock's now, not the machine's
