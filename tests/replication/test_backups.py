"""Backup copies: a delta applies only on the version held; a gap asks for the whole session;
copies are bounded like the cache and dropped when expired; a superseded owner stays refused."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

import sessionkeeper as sk
from sessionkeeper.replication.backups import Backups, Copy, Delta, delta_from_wire
from sessionkeeper.replication.node import Replicator
from sessionkeeper.replication.placement import Verdict
from tests.replication.conftest import KEY, MakeNode, NatsServer, wait_members, wait_until


def copy(
    token: str = "t", epoch: int = 1, version: int = 1, owner: str = "a", **attrs: bytes
) -> Copy:
    return Copy("shop", token, owner, epoch, version, dict(attrs), 0.0, 100.0, 60.0)


def delta(
    base: int, version: int, epoch: int = 1, rm: tuple[str, ...] = (), owner: str = "a", **ch: bytes
) -> Delta:
    return Delta("shop", "t", owner, epoch, base, version, dict(ch), rm, 110.0, 60.0)


def make(capacity: int = 10) -> tuple[Backups, Counter[str]]:
    counts: Counter[str] = Counter()
    return Backups(capacity, lambda name, n: counts.update({name: n})), counts


def test_deltas_apply_in_order_and_a_gap_asks_for_the_whole() -> None:
    b, _ = make()
    assert b.apply_delta(delta(0, 1, x=b"1")) is Verdict.SNAPSHOT  # nothing held yet
    assert b.apply_snapshot(copy(x=b"1", y=b"2")) is Verdict.APPLY
    assert b.apply_delta(delta(1, 2, rm=("y",), x=b"3")) is Verdict.APPLY
    got = b.get(("shop", "t"))
    assert got is not None
    assert (got.version, got.attributes, got.last_access_at) == (2, {"x": b"3"}, 110.0)
    assert b.apply_delta(delta(1, 2, x=b"3")) is Verdict.DUPLICATE
    assert b.apply_delta(delta(3, 4, x=b"5")) is Verdict.SNAPSHOT  # delta 2 -> 3 was missed
    assert b.get(("shop", "t")) == got  # nothing of it applied
    assert b.apply_snapshot(copy(version=4, x=b"5")) is Verdict.APPLY  # the recovery
    assert b.apply_delta(delta(4, 5, z=b"6")) is Verdict.APPLY


def test_a_delta_keeps_what_it_does_not_carry_and_sets_what_it_does() -> None:
    b, _ = make()
    held = Copy("shop", "t", "a", 3, 1, {"x": b"1"}, 5.0, 100.0, 60.0, "bob", 7, 900.0)
    b.apply_snapshot(held)
    d = Delta("shop", "t", "a", 3, 1, 2, {"y": b"2"}, ("x",), 110.0, 90.0, 950.0, "carol")
    assert b.apply_delta(d) is Verdict.APPLY
    want = Copy("shop", "t", "a", 3, 2, {"y": b"2"}, 5.0, 110.0, 90.0, "carol", 7, 950.0)
    assert b.get(("shop", "t")) == want


def test_a_delta_carries_the_principal_and_one_that_does_not_say_keeps_it() -> None:
    b, _ = make()
    b.apply_snapshot(copy(x=b"1"))
    login = delta_from_wire(delta(1, 2).to_wire() | {"pr": "alice"})
    assert b.apply_delta(login) is Verdict.APPLY
    assert (got := b.get(("shop", "t"))) is not None and got.principal == "alice"
    silent = delta(2, 3, x=b"2").to_wire()  # an older node's delta: no "pr"
    assert "pr" not in silent
    assert b.apply_delta(delta_from_wire(silent)) is Verdict.APPLY
    assert (got := b.get(("shop", "t"))) is not None and got.principal == "alice"
    logout = delta_from_wire(delta(3, 4).to_wire() | {"pr": None})
    assert b.apply_delta(logout) is Verdict.APPLY
    assert (got := b.get(("shop", "t"))) is not None and got.principal is None


def test_a_superseded_owner_stays_refused_after_the_copy_is_dropped() -> None:
    b, _ = make()
    b.apply_snapshot(copy(x=b"1"))
    assert b.apply_snapshot(copy(epoch=2, version=1, x=b"new")) is Verdict.APPLY
    assert b.apply_delta(delta(1, 2, x=b"old")) is Verdict.FENCED
    assert b.drop(("shop", "t"), 3, owner="a", older_only=True)  # a third owner announced itself
    assert b.get(("shop", "t")) is None
    assert b.apply_snapshot(copy(epoch=2, version=9, x=b"stale")) is Verdict.FENCED
    assert b.apply_delta(delta(1, 2, epoch=2, x=b"stale")) is Verdict.FENCED
    assert b.apply_snapshot(copy(epoch=3, version=1, x=b"ok")) is Verdict.APPLY
    assert not b.drop(("shop", "t"), 3, owner="a", older_only=True)  # the announcer's copy stays


def test_two_owners_at_one_epoch_are_ranked_by_name() -> None:
    """Two nodes that took a session over at once, each before the other's announcement came,
    own it at the same epoch: the backup ranks them by name, so that the lower one is refused
    (never acknowledged as a duplicate of what the other sent) and each backup keeps one."""
    b, _ = make()
    assert b.apply_snapshot(copy(epoch=2, version=3, owner="c", x=b"c")) is Verdict.APPLY
    assert b.apply_snapshot(copy(epoch=2, version=3, owner="b", x=b"b")) is Verdict.FENCED
    assert b.apply_snapshot(copy(epoch=2, version=9, owner="b", x=b"b")) is Verdict.FENCED
    assert b.apply_delta(delta(3, 4, epoch=2, owner="b", x=b"b")) is Verdict.FENCED
    assert (got := b.get(("shop", "t"))) is not None and got.attributes == {"x": b"c"}
    assert b.apply_delta(delta(3, 4, epoch=2, owner="d", x=b"d")) is Verdict.SNAPSHOT
    assert b.apply_snapshot(copy(epoch=2, version=1, owner="d", x=b"d")) is Verdict.APPLY
    assert not b.drop(("shop", "t"), 2, owner="c", older_only=True)  # c's announcement: d stays
    assert b.drop(("shop", "t"), 2, owner="e", older_only=True)
    assert b.apply_snapshot(copy(epoch=2, version=5, owner="d")) is Verdict.FENCED


def test_copies_are_bounded_and_expire() -> None:
    b, counts = make(capacity=3)
    for i in range(5):
        b.apply_snapshot(copy(token=f"t{i}"))
    assert [c.token for c in b.held()] == ["t2", "t3", "t4"]
    assert counts["replication_backup_evictions"] == 2
    assert b.expire(160.0) == 0  # last access 100, timeout 60: not yet
    assert b.expire(160.5) == 3 and len(b) == 0
    assert counts["replication_backups_expired"] == 3


def test_a_backup_that_lost_its_copy_gets_the_whole_session_again(make_node: MakeNode) -> None:
    a, b = make_node("a"), make_node("b")
    wait_members([a, b], 2)
    with a.request("shop") as s:
        s["x"] = 1
    assert b._replicator is not None
    assert b._replicator.backups.take(("shop", s.token)) is not None  # as if it never came
    with a.request("shop", s.id) as s:
        s["y"] = 2
    held = b._replicator.backups.get(("shop", s.token))
    assert held is not None and set(held.attributes) == {"x", "y"}
    assert a.stats()["replication_snapshot_requests"] == 1


def test_async_deltas_arrive_after_the_response_and_copies_expire(
    make_node: MakeNode, clock: sk.FakeClock
) -> None:
    a, b = make_node("a", ack="async", timeout_s=60), make_node("b", ack="async", timeout_s=60)
    wait_members([a, b], 2)
    with a.request("shop") as s:
        s["x"] = 1
    with a.request("shop", s.id) as s:
        s["x"] = 2
    assert a._replicator is not None and b._replicator is not None
    key = ("shop", s.token)
    assert wait_until(lambda: a.stats()["replication_async_in_flight"] == 0)
    held = b._replicator.backups.get(key)
    assert held is not None and held.attributes["x"] == b"2"
    clock.advance(61)
    b.housekeep()
    assert b._replicator.backups.get(key) is None
    assert b.stats()["replication_backups_expired"] == 1
    a.housekeep()  # a's record of it goes when its cache no longer holds the session
    a.sweep()
    a.housekeep()
    assert a.replication_health()["owned"] == 0


@contextlib.contextmanager
def paused(*nodes: sk.SessionManager) -> Iterator[None]:
    """The nodes' processes paused for the block: their loops stall, messages to them wait."""
    resume = threading.Event()
    for m in nodes:
        r = m._replicator
        assert r is not None and r.transport._loop is not None
        r.transport._loop.call_soon_threadsafe(resume.wait)
    try:
        yield
    finally:
        resume.set()


def one_session_on_three(make_node: MakeNode) -> tuple[dict[str, sk.SessionManager], str]:
    """Nodes a, b, c (0.3 s to answer) and a session of a's holding ``x=1``; its id."""
    nodes = {n: make_node(n, ack_timeout_s=0.3) for n in "abc"}
    wait_members(list(nodes.values()), 3)
    with nodes["a"].request("shop") as s:
        s["x"] = 1
    return nodes, s.id


def replaced_while_paused(
    make_node: MakeNode,
) -> tuple[dict[str, sk.SessionManager], str, str, Replicator]:
    """a's session changed while its backup was paused: another backup took the whole session,
    and the paused one, live again, still holds its copy. The nodes, the session's id, the old
    backup's name and its replicator."""
    nodes, sid = one_session_on_three(make_node)
    a, old = nodes["a"], sid.split(".")[2]
    stalled = nodes[old]._replicator
    assert stalled is not None
    with paused(nodes[old]), a.request("shop", sid) as s:
        s["x"] = 2  # the delta goes unanswered: another backup gets the whole session
    assert wait_until(lambda: a._replicator is not None and a._replicator.members.is_live(old))
    assert stalled.backups.get(("shop", s.token)) is not None
    return nodes, s.id, old, stalled


def test_a_replaced_backup_is_told_to_drop_its_copy_once_it_answers_again(
    make_node: MakeNode,
) -> None:
    """A backup that did not answer in time (paused: its loop stalls, its messages wait) is
    replaced; once it lives again its owner tells it to drop the copy it still holds, so that
    each session has one copy per backup, not one per backup it ever had."""
    nodes, sid, old, stalled = replaced_while_paused(make_node)
    a, key = nodes["a"], ("shop", sid.split(".")[0])
    assert a.stats()["replication_backups_replaced"] == 1
    (new,) = (n for n in "bc" if n != old)
    assert nodes[new]._replicator is not None
    assert nodes[new]._replicator.backups.get(key) is not None
    health = a.replication_health()
    assert health["healthy"] and health["retiring"] == 1  # its copies: new, and old's stale one
    assert a.stats()["replication_retiring"] == 1
    a.housekeep()
    assert stalled.backups.get(key) is None
    assert a.replication_health()["retiring"] == 0
    assert a.stats()["replication_retired_dropped"] == 1
    a.housekeep()  # told once
    assert a.stats()["replication_retired_dropped"] == 1


def test_an_invalidation_reaches_a_replaced_backup_too(make_node: MakeNode) -> None:
    """A session invalidated before its owner's housekeeping told a replaced backup to drop its
    copy: the tombstone goes to that backup as well, so the stale copy cannot bring the
    logged-out session back (a takeover prefers a copy to the store's tombstone)."""
    nodes, sid, old, stalled = replaced_while_paused(make_node)
    a, key = nodes["a"], ("shop", sid.split(".")[0])
    assert a.replication_health()["retiring"] == 1
    with a.request("shop", sid) as s:
        s.invalidate()
    assert stalled.backups.get(key) is None
    (new,) = (n for n in "bc" if n != old)
    assert nodes[new]._replicator is not None and nodes[new]._replicator.backups.get(key) is None


def test_a_replacement_that_did_not_answer_is_told_to_drop_its_copy_too(
    make_node: MakeNode,
) -> None:
    """The backup and the node chosen to replace it both stall: the change is refused (no
    backup took it) and rolled back, yet each applies what it got once it lives again. Both
    are told to drop those copies, which hold a change no client was told of."""
    nodes, sid = one_session_on_three(make_node)
    a, key = nodes["a"], ("shop", sid.split(".")[0])
    with (
        paused(nodes["b"], nodes["c"]),
        pytest.raises(sk.WriteRefused),
        a.request("shop", sid) as s,
    ):
        s["x"] = 2
    stalled = [nodes[n]._replicator for n in "bc"]
    assert wait_until(
        lambda: (
            all(r is not None and r.backups.get(key) is not None for r in stalled)
            and all(a._replicator is not None and a._replicator.members.is_live(n) for n in "bc")
        )
    )
    assert a.replication_health()["retiring"] == 1
    a.housekeep()  # drops both late copies; the repair then copies the session as it is
    for r in stalled:
        assert r is not None
        got = r.backups.get(key)
        assert got is None or got.attributes["x"] == b"1", got


def test_a_node_just_connected_waits_for_the_members_before_it_finds_no_backup(
    nats: NatsServer, clock: sk.FakeClock
) -> None:
    # The node is connected, but its reaction to that (its joining beat, which asks the
    # members to answer) runs after it on the transport's worker thread. A changed request in
    # between, with ack="sync" and no store, must wait for the members, not answer 503 (a
    # demo node's first login did, one time in ten).
    def node(name: str) -> sk.SessionManager:
        replication = sk.Replication(nats.url, cluster="j", key=KEY, heartbeat_s=600,
                                     ack_timeout_s=2.0)  # fmt: skip
        return sk.SessionManager(
            "memory://", node=name, clock=clock, housekeeping=False, replication=replication
        )

    peer, late = node("peer"), node("late")
    try:
        peer.start()
        assert peer._replicator is not None and late._replicator is not None
        assert wait_until(lambda: peer._replicator.transport.connected)  # type: ignore[union-attr]
        transport, members = late._replicator.transport, late._replicator.members
        react, release = transport._on_state, threading.Event()

        def held(up: bool) -> None:
            release.wait(30)
            react(up)

        def wait_for(*args: Any) -> bool:
            release.set()  # only now may the joining beat go out
            return original_wait_for(*args)

        transport._on_state = held
        original_wait_for = members.wait_for
        members.wait_for = wait_for  # type: ignore[method-assign]
        late.start()
        assert wait_until(lambda: transport.connected)
        with late.request("shop") as s:
            s["x"] = 1
        assert late.stats()["replication_snapshots"] == 1
        assert peer._replicator.backups.get(("shop", s.token)) is not None
    finally:
        release.set()
        late.close(deadline_s=1)
        peer.close(deadline_s=1)
