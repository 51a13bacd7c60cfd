"""Graceful close hands sessions off; a stale owner is fenced; tombstones replicate; the NATS
server restarted mid-traffic: cached sessions keep being served, replication resumes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgpack
import pytest

import sessionkeeper as sk
from sessionkeeper import ids
from sessionkeeper.replication.backups import Copy
from sessionkeeper.replication.codec import MAC_BYTES
from sessionkeeper.replication.node import Replicator
from tests.replication.conftest import MakeNode, NatsServer, wait_members, wait_until
from tests.replication.test_failover import crash


def route_of(session_id: str) -> tuple[str, ...]:
    parsed = ids.parse_route(session_id)
    assert parsed is not None
    return parsed[1]


def test_close_hands_owned_sessions_to_their_backups(make_node: MakeNode) -> None:
    nodes = {name: make_node(name) for name in "abc"}
    wait_members(list(nodes.values()), 3)
    a = nodes["a"]
    sids = []
    for i in range(10):
        with a.request("shop") as s:
            s["i"] = i
        sids.append(s.id)
    a.close()
    assert a.stats()["replication_handoffs"] == 10
    # The new owners' announcements reach a while it hands off: not a fencing of a stale owner.
    assert a.stats()["replication_fenced"] == 0
    for i, sid in enumerate(sids):
        backup = nodes[route_of(sid)[1]]
        with backup.request("shop", sid) as s:
            assert s["i"] == i
            s["seen"] = True  # the new owner's own backup acknowledges it
        assert route_of(s.id)[0] == backup.node and len(route_of(s.id)) == 2
    for name in "bc":
        assert nodes[name].replication_health()["healthy"] is True


def test_a_stale_owner_is_fenced(make_node: MakeNode) -> None:
    """a is paused (it hears nothing) while its backup takes the session over; when a comes back
    and serves the old id from its cache, its delta is refused and it drops its copy."""
    nodes = {name: make_node(name) for name in "abc"}
    wait_members(list(nodes.values()), 3)
    a = nodes["a"]
    with a.request("shop") as s:
        s["n"] = 1
    old_id = s.id
    backup = nodes[route_of(old_id)[1]]
    assert a._replicator is not None
    transport = a._replicator.transport
    hear = transport._handler
    transport._handler = lambda _subject, _frame: None  # what a paused process hears
    with backup.request("shop", old_id) as s2:
        s2["n"] = 2  # acknowledged by the new owner's backup
    transport._handler = hear

    with pytest.raises(sk.WriteRefused), a.request("shop", old_id) as s3:
        assert s3["n"] == 1  # its old copy, from its cache
        s3["n"] = 99
    assert a.stats()["replication_fenced"] == 1
    with backup.request("shop", s2.id) as s4:
        assert s4["n"] == 2
    with a.request("shop", old_id) as s5:  # no copy left on a: it asks the nodes the id names
        assert s5["n"] == 2
    assert route_of(s5.id)[0] == "a"


@dataclass
class Orphan:
    """A crashed owner's session, its copy on b or c (a, the owner, is known dead to both)."""

    sid: str
    key: tuple[str, str]
    b: Replicator
    c: Replicator
    copy: Copy


def orphaned_session(make_node: MakeNode) -> tuple[dict[str, sk.SessionManager], Orphan]:
    nodes = {name: make_node(name) for name in "abc"}
    wait_members(list(nodes.values()), 3)
    with nodes["a"].request("shop") as s:
        s["n"] = 1
    key = ("shop", s.token)
    b, c = nodes["b"]._replicator, nodes["c"]._replicator
    assert b is not None and c is not None
    held = b.backups.get(key) or c.backups.get(key)
    assert held is not None
    crash(nodes["a"])
    for r in (b, c):
        r.members.mark_dead("a")  # as its first unanswered request would
    return nodes, Orphan(s.id, key, b, c, held)


def adopted_unheard(o: Orphan) -> int:
    """c adopts the copy (parked) while b hears nothing but beats, until c's announcement and
    its copy to b went unheard; c's epoch."""
    hear = o.b.transport._handler
    unheard: set[str] = set()

    def deaf_but_to_beats(subject: str, frame: bytes) -> bytes | Callable[[], bytes | None] | None:
        kind = msgpack.unpackb(frame[MAC_BYTES:], raw=False)["t"]
        if kind == "hb":
            return hear(subject, frame)
        unheard.add(kind)
        return None

    o.b.transport._handler = deaf_but_to_beats
    try:
        epoch = o.c.failover.adopt(o.copy, parked=True).epoch
        assert wait_until(lambda: {"fence", "snap"} <= unheard)
    finally:
        o.b.transport._handler = hear
    return epoch


def test_two_owners_at_one_epoch_end_as_one(make_node: MakeNode) -> None:
    """b and c take a crashed owner's session over at once, each before it heard of the other:
    both own it at the same epoch. The name breaks the tie on every node, so c keeps it and b,
    whose copy c (its backup) refuses, gives it up; b then holds c's copy as c's backup."""
    nodes, o = orphaned_session(make_node)
    epoch = adopted_unheard(o)
    assert o.b.failover.adopt(o.copy, parked=True).epoch == epoch  # the tie
    assert wait_until(lambda: o.key not in o.b.owned)
    assert o.key in o.c.owned and nodes["b"].stats()["replication_fenced"] == 1
    o.c.housekeep()  # c's copy, unanswered while b was deaf, goes to b again
    assert wait_until(lambda: (got := o.b.backups.get(o.key)) is not None and got.owner == "c")


def test_a_handed_copy_given_up_again_carries_its_last_owners_rank(make_node: MakeNode) -> None:
    """c owns a crashed node's session, parked (no request for it yet), when b takes it over
    without having heard c's announcement: the copy c gives up is stamped with c's rank, so b
    owns it above c (with the first owner's epoch, b would tie with c, and lose to c's name)."""
    _, o = orphaned_session(make_node)
    epoch = adopted_unheard(o)
    o.b.backups.take(o.key)  # b's own copy is the first owner's: only c's is current
    got = o.b.recover("shop", o.key[1], route_of(o.sid))
    assert got is not None and (got.owner, got.epoch) == ("c", epoch)
    assert o.b.owned[o.key].epoch == epoch + 1 and o.key not in o.c.owned


def test_an_invalidation_drops_the_backup_copies(make_node: MakeNode) -> None:
    a, b = make_node("a"), make_node("b")
    wait_members([a, b], 2)
    with a.request("shop") as s:
        s["n"] = 1
    sid = s.id
    assert b._replicator is not None and len(b._replicator.backups) == 1
    with a.request("shop", sid) as s:
        s.invalidate()
    assert len(b._replicator.backups) == 0
    crash(a)
    with b.request("shop", sid) as s:
        assert "n" not in s  # nothing came back


def test_a_nats_restart_keeps_cached_sessions_served_and_replication_resumes(
    make_node: MakeNode, nats: NatsServer
) -> None:
    a, b = make_node("a"), make_node("b")
    wait_members([a, b], 2)
    with a.request("shop") as s:
        s["n"] = 1
    sid = s.id
    nats.stop()
    served = refused = 0
    for _ in range(20):
        with a.request("shop", sid) as s:
            assert s["n"] == 1
        served += 1
    with pytest.raises(sk.WriteRefused), a.request("shop", sid) as s:
        s["n"] = 2  # would live in a's memory only: not acknowledged
    refused += 1
    assert a.replication_health()["connected"] is False
    nats.start()
    wait_members([a, b], 2)
    with a.request("shop", s.id) as s:
        s["n"] = 3
    assert a.replication_health()["healthy"] is True
    crash(a)
    with b.request("shop", s.id) as s:
        assert s["n"] == 3
    assert (served, refused) == (20, 1)
    assert a.stats()["replication_disconnects"] >= 1


def test_close_hands_a_session_to_another_member_when_its_backup_is_silent(
    make_node: MakeNode,
) -> None:
    nodes = {name: make_node(name, ack_timeout_s=0.2) for name in "abc"}
    wait_members(list(nodes.values()), 3)
    a = nodes["a"]
    sids = []
    for i in range(5):
        with a.request("shop") as s:
            s["i"] = i
        sids.append(s.id)
    backups = {route_of(sid)[1] for sid in sids}
    silent = nodes[sorted(backups)[0]]
    assert silent._replicator is not None
    silent._replicator.transport._handler = lambda _subject, _frame: None  # paused
    a.close()
    assert a.stats()["replication_handoffs"] == 5
    assert a.stats()["replication_unanswered"] == 1  # the silent one was asked once
    other = next(m for name, m in nodes.items() if name != "a" and m is not silent)
    for i, sid in enumerate(sids):
        with other.request("shop", sid) as s:
            assert s["i"] == i
