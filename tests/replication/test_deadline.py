"""A session's absolute deadline (``max_lifetime_s``, ``set_absolute_expiry``) travels with its
replicated copies: it survives a failover and a handoff, a request that changes only the deadline
is replicated, and a backup copy past its deadline is dropped (issue 10's absolute lifetime)."""

from __future__ import annotations

import sessionkeeper as sk
from tests.replication.conftest import MakeNode, wait_members
from tests.replication.test_failover import crash
from tests.replication.test_handoff import route_of


def deadline_session(owner: sk.SessionManager, clock: sk.FakeClock, in_s: float) -> str:
    with owner.request("shop") as s:
        s["n"] = 1
        s.set_absolute_expiry(clock.time() + in_s)
    return s.id


def test_the_deadline_survives_the_crash_of_the_owner(
    make_node: MakeNode, clock: sk.FakeClock
) -> None:
    a, b = make_node("a"), make_node("b")
    wait_members([a, b], 2)
    deadline = clock.time() + 100
    sid = deadline_session(a, clock, 100)
    crash(a)
    with b.request("shop", sid) as s:
        assert s["n"] == 1
        assert s.absolute_expires_at == deadline
    clock.advance(101)  # past the deadline, well within the idle timeout
    with b.request("shop", s.id) as s2:
        assert "n" not in s2 and s2.token != s.token


def test_the_deadline_survives_a_handoff(make_node: MakeNode, clock: sk.FakeClock) -> None:
    a, b = make_node("a"), make_node("b")
    wait_members([a, b], 2)
    deadline = clock.time() + 100
    sid = deadline_session(a, clock, 100)
    a.close()
    with b.request("shop", sid) as s:
        assert route_of(s.id)[0] == "b"
        assert s.absolute_expires_at == deadline


def test_the_apps_max_lifetime_survives_a_failover(
    make_node: MakeNode, clock: sk.FakeClock
) -> None:
    a, b = make_node("a", max_lifetime_s=300), make_node("b")  # b has no lifetime of its own
    wait_members([a, b], 2)
    with a.request("shop") as s:
        s["n"] = 1
    crash(a)
    with b.request("shop", s.id) as s2:
        assert s2.absolute_expires_at == s2.created_at + 300


def test_a_request_that_only_sets_the_deadline_is_replicated(
    make_node: MakeNode, clock: sk.FakeClock
) -> None:
    a, b = make_node("a"), make_node("b")
    wait_members([a, b], 2)
    with a.request("shop") as s:
        s["n"] = 1
    with a.request("shop", s.id) as s:
        s.set_absolute_expiry(clock.time() + 50)
    assert b._replicator is not None
    (copy,) = b._replicator.backups.held()
    assert copy.absolute_expires_at == clock.time() + 50
    with a.request("shop", s.id) as s:
        s.set_absolute_expiry(None)  # removed again: the backup forgets it too
    (copy,) = b._replicator.backups.held()
    assert copy.absolute_expires_at is None


def test_a_backup_copy_past_its_deadline_is_dropped(
    make_node: MakeNode, clock: sk.FakeClock
) -> None:
    a, b = make_node("a"), make_node("b")
    wait_members([a, b], 2)
    deadline_session(a, clock, 100)
    with a.request("shop") as s:
        s["n"] = 2  # no deadline: kept
    assert b._replicator is not None
    assert len(b._replicator.backups) == 2
    clock.advance(101)
    b._replicator.housekeep()
    assert [c.token for c in b._replicator.backups.held()] == [s.token]
    assert b.stats()["replication_backups_expired"] == 1
