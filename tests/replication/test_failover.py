"""Two and three managers in one process, replicating over a private nats-server: each has its
own MemoryStore, so a session that another node serves was carried there by replication."""

from __future__ import annotations

from pathlib import Path

import pytest

import sessionkeeper as sk
from sessionkeeper import ids
from sessionkeeper.stores.sql import SqlStore
from tests.replication.conftest import MakeNode, wait_members


def crash(m: sk.SessionManager) -> None:
    """As a killed process looks to the others: its connection drops, no handoff, no goodbye."""
    assert m._replicator is not None
    m._replicator.transport.close(graceful=False)


def serve_changes(m: sk.SessionManager, sid: str, n: int) -> str:
    for i in range(1, n + 1):
        with m.request("shop", sid) as s:
            s["n"] = i
            s[f"k{i}"] = i
        sid = s.id
    return sid


def tiered_pair(
    make_node: MakeNode, tmp_path: Path, interval_s: float = 60, **options: object
) -> tuple[sk.SessionManager, sk.SessionManager]:
    """Nodes ``a`` and ``b`` under ``TimeBased(interval_s)`` in front of one shared SQLite store
    (``tmp_path / "sessions.db"``), each seeing the other."""
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    SqlStore(url).init_schema()
    a = make_node("a", store=url, write=sk.TimeBased(interval_s=interval_s), **options)
    b = make_node("b", store=url, write=sk.TimeBased(interval_s=interval_s), **options)
    wait_members([a, b], 2)
    return a, b


def test_a_session_survives_the_crash_of_its_owner_with_every_acknowledged_change(
    make_node: MakeNode,
) -> None:
    nodes = {name: make_node(name) for name in "abc"}
    wait_members(list(nodes.values()), 3)
    a = nodes["a"]
    with a.request("shop") as s:
        s["n"] = 0
    token, route = ids.parse_route(s.id) or ("", ())
    assert route[0] == "a" and len(route) == 2
    sid = serve_changes(a, s.id, 20)
    with a.request("shop", sid) as s:
        del s["k1"]
    crash(a)

    backup = nodes[route[1]]
    with backup.request("shop", sid) as s:
        assert s["n"] == 20
        assert "k1" not in s and s["k20"] == 20
        s["after"] = True  # acknowledged by the third node, the new backup
    new_token, new_route = ids.parse_route(s.id) or ("", ())
    assert new_token == token and new_route[0] == route[1]
    third = next(m for name, m in nodes.items() if name not in route)
    assert new_route[1:] == (third.node,)
    assert backup.stats()["replication_takeovers"] == 1
    crash(backup)
    with third.request("shop", s.id) as s2:
        assert s2["after"] is True and s2["n"] == 20


def test_a_lone_survivor_serves_the_session_and_refuses_to_acknowledge_a_change(
    make_node: MakeNode,
) -> None:
    """Two nodes, one crashed: the copy is served; a change, which would live in one process
    only (no store), is refused as unavailable (503) rather than acknowledged."""
    a, b = make_node("a"), make_node("b")
    wait_members([a, b], 2)
    with a.request("shop") as s:
        s["n"] = 1
    crash(a)
    with b.request("shop", s.id) as s2:
        assert s2["n"] == 1
    with pytest.raises(sk.WriteRefused), b.request("shop", s2.id) as s3:
        s3["n"] = 2  # refused (503 in every adapter) and rolled back
    with b.request("shop", s2.id) as s4:
        assert s4["n"] == 1
    assert b.replication_health()["healthy"] is False


def test_a_new_session_refused_on_a_lone_survivor_is_not_kept(make_node: MakeNode) -> None:
    """A session created by a request whose change no backup acknowledged: the 503 carries no
    id, so nothing may keep it (it would live on, owned and copied by the repairs, unreachable
    by any client): not the cache, not the process's memory:// store, not the replicator."""
    a, b = make_node("a"), make_node("b")
    wait_members([a, b], 2)
    crash(a)
    with pytest.raises(sk.WriteRefused), b.request("shop") as s:
        s["user"] = "ann"  # a login, answered 503
    assert b.store.load("shop", s.token) is None
    assert b.replication_health()["owned"] == 0
    assert b._cache.get(("shop", s.token)) is None
    b.housekeep()  # no repair brings it back
    assert b.replication_health()["owned"] == 0 and b.store.load("shop", s.token) is None


def test_tiered_time_based_with_one_replica_loses_nothing_at_a_crash(
    make_node: MakeNode, tmp_path: Path
) -> None:
    """In front of a shared SQLite store under ``TimeBased(60)``: the store sees the creation
    only, the backup sees every change; the owner's crash loses none, and the new owner's
    write goes to the store on top of the version there."""
    a, b = tiered_pair(make_node, tmp_path)
    with a.request("shop") as s:
        s["n"] = 0
    sid = serve_changes(a, s.id, 30)
    stored = b.store.load("shop", s.token)
    assert stored is not None and stored.attributes["n"] == b"0"  # the store is behind
    crash(a)
    with b.request("shop", sid) as s:
        assert s["n"] == 30 and s["k30"] == 30
    b.flush()
    stored = b.store.load("shop", s.token)
    assert stored is not None and stored.attributes["n"] == b"30"


def test_tiered_new_owner_writes_its_copys_owner_over_the_stores(
    make_node: MakeNode, tmp_path: Path
) -> None:
    """The copy taken over holds another owner than the store's row (here the row was changed
    behind the nodes' back): the new owner's write sets the copy's, as it writes the copy's
    attributes, though nothing on that node changed the owner (a write whose owner did not
    change leaves the stored one alone)."""
    import sqlite3

    a, b = tiered_pair(make_node, tmp_path)
    with a.request("shop") as s:
        s["n"] = 0
        s.owner = "alice"
    sid = serve_changes(a, s.id, 2)
    with sqlite3.connect(tmp_path / "sessions.db") as db:
        db.execute("UPDATE sessionkeeper_sessions SET owner = 'carol'")
    crash(a)
    with b.request("shop", sid) as s:
        assert s["n"] == 2 and s.owner == "alice"
    b.flush()
    stored = b.store.load("shop", s.token)
    assert stored is not None and stored.owner == "alice" and stored.attributes["n"] == b"2"


def test_tiered_owner_change_reaches_the_backup(make_node: MakeNode, tmp_path: Path) -> None:
    a, b = tiered_pair(make_node, tmp_path)
    with a.request("shop") as s:
        s["n"] = 0
        s.owner = "alice"
    with a.request("shop", s.id) as s:
        s.owner = "bob"
        s["n"] = 1
    crash(a)
    with b.request("shop", s.id) as s:
        assert s["n"] == 1 and s.owner == "bob"


def test_an_owner_change_alone_reaches_the_backup(make_node: MakeNode, tmp_path: Path) -> None:
    """A login that sets no attribute is a change the backup must hold too."""
    a, b = tiered_pair(make_node, tmp_path)
    with a.request("shop") as s:
        s["n"] = 0
    with a.request("shop", s.id) as s:
        s.owner = "alice"
    crash(a)
    with b.request("shop", s.id) as s:
        assert s.owner == "alice"


def test_a_deferred_policy_without_sticky_routing_loses_nothing_over_the_channel(
    make_node: MakeNode, tmp_path: Path
) -> None:
    """``replicas=0``: no backups, only the channel. Under ``TimeBased(10)`` on a shared store,
    requests alternating between two live nodes count 1, 2, 3, ... with no gap: a node that
    gets a session last served by the other asks it for its unwritten changes first."""
    a, b = tiered_pair(make_node, tmp_path, interval_s=10, replicas=0)
    sid = None
    seen = []
    for i in range(20):
        with (a, b)[i % 2].request("shop", sid) as s:
            s["count"] = s.get("count", 0) + 1
            seen.append(s["count"])
        sid = s.id
    assert seen == list(range(1, 21))
    assert a.stats()["replication_given_up"] == 10 and b.stats()["replication_given_up"] == 9
