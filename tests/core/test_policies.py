"""Each write policy: when the store is written and what is written, counted at the store."""

from __future__ import annotations

import dataclasses
import math

import pytest

import sessionkeeper as sk
from sessionkeeper.policies import MaxLoss, WriteRules

from .conftest import MakeManager, RecordingStore, held, new_session

ALL_POLICIES = [
    sk.EndOfRequest(),
    sk.TimeBased(interval_s=10),
    sk.AfterUpdates(3),
    sk.AfterRequests(3),
    sk.OnAttribute(),
    sk.Manual(),
]
DEFERRED = [sk.TimeBased(interval_s=10), sk.AfterUpdates(3), sk.AfterRequests(3), sk.Manual()]


def ids_(p: sk.WritePolicy) -> str:
    return p.spec()


# -- save_on_create ---------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=ids_)
def test_new_session_written_at_end_of_its_first_request(
    make: MakeManager, store: RecordingStore, policy: sk.WritePolicy
) -> None:
    m = make(write=policy)
    with m.request(app="shop") as s:
        s["a"] = 1
        before_end = store.written
    assert store.written == before_end + (0 if before_end else 1)
    stored = store.raw("shop", s.token)
    assert stored is not None and set(stored.attributes) == {"a"}


def test_request_that_never_writes_creates_nothing(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make()
    with held(m, app="shop") as (hold, s):
        assert "x" not in s and s.get("y") is None and len(s) == 0
    assert store.written == 0 and m.stats()["created"] == 0 and m.stats()["live"] == 0
    assert m.lifecycle.cookie_action(hold) is None


def test_save_on_create_false_leaves_a_manual_session_to_sync(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    m = make(write=sk.Manual(), save_on_create=False)
    with m.request(app="shop") as s:
        s["a"] = 1
    clock.advance(3600 * 0 + 100)
    m.housekeep()
    assert store.written == 0
    with m.request(app="shop", session_id=s.id) as s:
        s.sync()
    assert store.written == 1


# -- EndOfRequest -----------------------------------------------------------------------------


def test_end_of_request_writes_only_changed_requests_and_only_changed_keys(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(write=sk.EndOfRequest())
    sid = new_session(m, a=1, b=2)
    assert store.written == 1
    with m.request(app="shop", session_id=sid) as s:
        assert s["a"] == 1
    assert store.written == 1
    with m.request(app="shop", session_id=sid) as s:
        s["b"] = 3
        del s["a"]
        assert store.written == 1  # not inside the request
    assert store.written == 2
    last = store.saves[-1]
    assert dict(last.changed) == {"b": b"3"} and last.removed == {"a"} and not last.full


# -- TimeBased --------------------------------------------------------------------------------


def test_time_based_housekeeping_writes_only_sessions_changed_since(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    m = make(write=sk.TimeBased(interval_s=10))
    changed = new_session(m, n=0)
    idle = new_session(m, n=0)
    assert store.written == 2
    with m.request(app="shop", session_id=changed) as s:
        s["n"] = 1
    clock.advance(5)
    m.housekeep()
    assert store.written == 2  # not due yet
    clock.advance(5)
    m.housekeep()
    assert store.written == 3
    assert [r.token for r in store.saves[2:]] == [changed.split(".")[0]]
    assert idle.split(".")[0] not in {r.token for r in store.saves[2:]}
    clock.advance(20)
    m.housekeep()
    assert store.written == 3  # nothing changed since


def test_time_based_writes_at_end_of_first_request_after_due(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    m = make(write=sk.TimeBased(interval_s=10))
    sid = new_session(m, n=0)
    clock.advance(1)
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 1
    assert store.written == 1
    clock.advance(9)
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 2
        assert store.written == 1
    assert store.written == 2
    assert store.saves[-1].changed == {"n": b"2"}


# -- AfterUpdates / AfterRequests -------------------------------------------------------------


def test_after_updates_writes_inside_the_nth_update(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(write=sk.AfterUpdates(3))
    sid = new_session(m, n=0)
    assert store.written == 1
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 1
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 2
        assert store.written == 1
        s["m"] = 3
        assert store.written == 2  # inside the third update
        assert store.saves[-1].changed == {"n": b"2", "m": b"3"}
    assert store.written == 2


def test_after_requests_writes_at_the_end_of_the_nth_request(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(write=sk.AfterRequests(3))
    sid = new_session(m, n=0)
    for i in range(1, 3):
        with m.request(app="shop", session_id=sid) as s:
            s["n"] = i
        assert store.written == 1
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 3
        assert store.written == 1
    assert store.written == 2
    assert store.saves[-1].changed == {"n": b"3"}


def test_after_requests_unchanged_requests_write_nothing(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(write=sk.AfterRequests(2))
    sid = new_session(m, n=0)
    for _ in range(5):
        with m.request(app="shop", session_id=sid) as s:
            _ = s["n"]
    assert store.written == 1


# -- OnAttribute / Manual ---------------------------------------------------------------------


def test_on_attribute_writes_inside_every_set_and_delete(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(write=sk.OnAttribute())
    sid = new_session(m, n=0)
    base = store.written
    with m.request(app="shop", session_id=sid) as s:
        s["a"] = 1
        assert store.written == base + 1
        del s["a"]
        assert store.written == base + 2
        assert store.saves[-1].removed == {"a"}
    assert store.written == base + 2


def test_manual_writes_only_on_sync(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    m = make(write=sk.Manual())
    sid = new_session(m, n=0)
    assert store.written == 1
    for i in range(5):
        with m.request(app="shop", session_id=sid) as s:
            s["n"] = i
        clock.advance(100)
        m.housekeep()
    assert store.written == 1
    with m.request(app="shop", session_id=sid) as s:
        s.sync()
        assert store.written == 2
    assert store.raw("shop", s.token).attributes["n"] == b"4"  # type: ignore[union-attr]


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=ids_)
def test_sync_writes_now_under_every_policy(
    make: MakeManager, store: RecordingStore, policy: sk.WritePolicy
) -> None:
    m = make(write=policy)
    sid = new_session(m, n=0)
    with m.request(app="shop", session_id=sid) as s:
        s["n"] = 41
        s["x"] = "y"
        s.sync()
        stored = store.raw("shop", s.token)
        assert stored is not None and stored.attributes["x"] == b'"y"'
        assert not s.has_changes()


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=ids_)
def test_sync_of_a_brand_new_session(
    make: MakeManager, store: RecordingStore, policy: sk.WritePolicy
) -> None:
    m = make(write=policy)
    with held(m, app="shop") as (hold, s):
        s.sync()
        assert store.raw("shop", s.token) is not None
    assert m.lifecycle.cookie_action(hold) == "set"


@pytest.mark.parametrize("policy", DEFERRED, ids=ids_)
def test_flush_writes_every_dirty_session_in_one_batch(
    make: MakeManager, store: RecordingStore, policy: sk.WritePolicy
) -> None:
    m = make(write=policy)
    sids = [new_session(m, n=0) for _ in range(5)]
    for sid in sids:
        with m.request(app="shop", session_id=sid) as s:
            s["n"] = 1
    assert m.stats()["dirty"] == 5
    batches = store.stats.write_batches
    assert m.flush() == 5
    assert store.stats.write_batches == batches + 1
    assert m.stats()["dirty"] == 0
    assert all(store.raw("shop", sid.split(".")[0]).attributes["n"] == b"1" for sid in sids)  # type: ignore[union-attr]


@pytest.mark.parametrize("policy", DEFERRED, ids=ids_)
def test_clean_close_flushes_every_dirty_session(
    make: MakeManager, store: RecordingStore, policy: sk.WritePolicy
) -> None:
    m = make(write=policy)
    sids = [new_session(m, n=0) for _ in range(3)]
    for sid in sids:
        with m.request(app="shop", session_id=sid) as s:
            s["n"] = 7
    assert m.close() == []
    for sid in sids:
        assert store.raw("shop", sid.split(".")[0]).attributes["n"] == b"7"  # type: ignore[union-attr]


# -- contents ---------------------------------------------------------------------------------


def test_contents_all_writes_every_attribute(make: MakeManager, store: RecordingStore) -> None:
    m = make(contents="all")
    sid = new_session(m, a=1, b=2)
    with m.request(app="shop", session_id=sid) as s:
        s["a"] = 5
    last = store.saves[-1]
    assert last.full and dict(last.changed) == {"a": b"5", "b": b"2"}


def test_contents_updated_misses_in_place_mutation(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(contents="updated")
    sid = new_session(m, cart=[])
    with m.request(app="shop", session_id=sid) as s:
        s["cart"].append("apple")
    assert store.written == 1  # documented: "updated" only sees set and delete


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=ids_)
def test_contents_accessed_catches_in_place_mutation(
    make: MakeManager, store: RecordingStore, policy: sk.WritePolicy
) -> None:
    m = make(contents="accessed", write=policy)
    sid = new_session(m, cart=[], other="x")
    with m.request(app="shop", session_id=sid) as s:
        s["cart"].append("apple")
        _ = s["other"]
    m.flush()
    assert store.raw("shop", s.token).attributes["cart"] == b'["apple"]'  # type: ignore[union-attr]
    assert store.saves[-1].changed == {"cart": b'["apple"]'}


def test_contents_accessed_unchanged_reads_write_nothing(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(contents="accessed")
    sid = new_session(m, cart=["a"], n=1)
    for _ in range(3):
        with m.request(app="shop", session_id=sid) as s:
            assert s["cart"] == ["a"] and s["n"] == 1
    m.flush()
    assert store.written == 1


# -- access time ------------------------------------------------------------------------------


def test_access_only_changes_touch_at_most_once_per_save_period(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock
) -> None:
    m = make(save_period_s=60)
    sid = new_session(m, n=0)
    for _ in range(5):
        clock.advance(10)
        with m.request(app="shop", session_id=sid) as s:
            _ = s["n"]
        m.housekeep()
    assert store.stats.touches == 0
    clock.advance(15)  # 65 s after the write
    with m.request(app="shop", session_id=sid) as s:
        _ = s["n"]
    m.housekeep()
    m.housekeep()
    assert store.stats.touches == 1 and store.written == 1
    assert store.raw("shop", s.token).last_access_at == clock.time()  # type: ignore[union-attr]


@pytest.mark.parametrize("policy", DEFERRED, ids=ids_)
def test_dirty_session_not_yet_due_still_has_its_access_time_touched(
    make: MakeManager, store: RecordingStore, clock: sk.FakeClock, policy: sk.WritePolicy
) -> None:
    """Another node's sweep must see a session in use as alive even while its changes wait."""
    m = make(write=policy, save_period_s=60, timeout_s=300)
    other = make(node="b", write=policy, save_period_s=60, timeout_s=300)
    sid = new_session(m, n=0)
    for i in range(20):  # 2000 s of activity, far beyond timeout + grace
        clock.advance(100)
        with m.request(app="shop", session_id=sid) as s:
            if i == 0 or isinstance(policy, sk.Manual):
                s["n"] = s["n"] + 1  # a change the policy keeps back
        m.housekeep()
        other.sweep()
    assert store.raw("shop", sid.split(".")[0]) is not None
    assert other.stats()["timed_out"] == 0


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (sk.EndOfRequest(), MaxLoss(0, 0, 0)),
        (sk.OnAttribute(), MaxLoss(0, 0, 0)),
        (sk.TimeBased(10), MaxLoss(12, math.inf, math.inf)),
        (sk.AfterUpdates(5), MaxLoss(math.inf, 4, math.inf)),
        (sk.AfterRequests(3), MaxLoss(math.inf, math.inf, 2)),
        (sk.Manual(), MaxLoss(math.inf, math.inf, math.inf)),
    ],
)
def test_each_policy_states_its_crash_window_as_numbers(
    policy: sk.WritePolicy, expected: MaxLoss
) -> None:
    assert policy.max_loss(flush_poll_s=1.0) == expected
    assert expected.nothing == (not policy.deferred)


@dataclasses.dataclass
class _Copy:
    """A session's counters and store position, as the shared write rules read them."""

    changed: bool = True
    created: bool = True
    in_store: bool = True
    is_new: bool = False
    in_use: bool = False
    updates_since_write: int = 1
    requests_since_write: int = 1
    last_write_at: float = 0.0
    last_access_at: float = 0.0
    last_store_access_at: float = 0.0

    def has_changes(self) -> bool:
        return self.changed

    @property
    def unwritten(self) -> bool:
        return self.created and (self.changed or not self.in_store)


@pytest.mark.parametrize("policy", ALL_POLICIES, ids=ids_)
def test_the_shared_write_rules_hold_under_every_policy(policy: sk.WritePolicy) -> None:
    rules = WriteRules(policy, save_on_create=True, save_period_s=60.0)
    never_stored = _Copy(in_store=False, changed=False)
    assert rules.write_at_request_end(never_stored, 0.0) and rules.due_for_flush(never_stored, 0.0)
    assert not WriteRules(policy, save_on_create=False).due_for_flush(never_stored, 0.0)
    assert rules.discard_after_failure(_Copy(in_store=False, is_new=True), created_here=True)
    assert rules.write_after_failure(_Copy()) == (not policy.deferred)
    assert rules.write_before_eviction(_Copy()) and not rules.write_before_eviction(
        _Copy(changed=False)
    )
    used = _Copy(changed=True, last_access_at=100.0, last_store_access_at=30.0)
    assert rules.touch_due(used, 100.0) and not rules.touch_due(used, 80.0)
