"""Issue 11: one changed session is one transaction at the SQL server, the version check inside
it: nothing read before, nothing committed after. Counted by the servers themselves where a test
can see one connection's own counters (SQLite's statement trace, MariaDB's session status); the
PostgreSQL figures are in the floor benchmark (server counters need a private server)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from sessionkeeper.stores import RetryPolicy, SaveStatus
from sessionkeeper.stores.sql import SqlStore
from tests.services import unique_name

from .contract import T0, req, tok

WAIT_S = 10


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[tuple[SqlStore, list[str]]]:
    """A SQLite store and the statements its connections run (sqlite3's trace: every statement
    the library executes, whether SQLAlchemy or the raw driver sent it)."""
    store = SqlStore(f"sqlite:///{tmp_path / 's.db'}", retry=RetryPolicy(attempts=1, backoff_s=0))
    sent: list[str] = []

    @event.listens_for(store.engine, "connect")
    def _trace(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_trace_callback(lambda sql: sent.append(" ".join(sql.split()[:3])))

    store.init_schema()
    sent.clear()
    yield store, sent
    store.close()


def _verbs(sent: list[str]) -> list[str]:
    return [s.split()[0].upper() for s in sent]


def test_sqlite_update_is_one_immediate_transaction_without_select(
    sqlite_store: tuple[SqlStore, list[str]],
) -> None:
    store, sent = sqlite_store
    store.save_many([req(tok(1), 0, {"a": b"1", "b": b"2"})])
    sent.clear()
    [res] = store.save_many([req(tok(1), 1, {"a": b"3"}, frozenset({"b"}))])
    assert res.status is SaveStatus.SAVED and res.version == 2
    assert _verbs(sent) == ["BEGIN", "UPDATE", "INSERT", "DELETE", "COMMIT"], sent
    s = store.load("shop", tok(1))
    assert s is not None and dict(s.attributes) == {"a": b"3"} and s.version == 2


def test_sqlite_creation_is_one_immediate_transaction_without_select(
    sqlite_store: tuple[SqlStore, list[str]],
) -> None:
    store, sent = sqlite_store
    [res] = store.save_many([req(tok(1), 0, {"a": b"1"}, full=True)])
    assert res.status is SaveStatus.SAVED and res.version == 1
    assert _verbs(sent) == ["BEGIN", "INSERT", "INSERT", "COMMIT"], sent


def test_sqlite_batch_is_one_immediate_transaction_each_session_answered_its_own(
    sqlite_store: tuple[SqlStore, list[str]],
) -> None:
    # A group commit's batch: the write lock, which every process's writer waits for, taken
    # once for all its sessions, each in (app, token) order, without a locking read. A stale
    # one and a creation meeting an existing row write nothing in it; the general path then
    # merges the stale one, and answers the creation GONE (the row is a tombstone).
    store, sent = sqlite_store
    store.save_many([req(tok(i), 0, {"a": b"1"}) for i in (1, 2, 3)])
    store.save_many([req(tok(2), 1, {"b": b"2"})])  # tok(2) is at version 2 now
    assert store.delete("shop", tok(3), tombstone_until=T0 + 60)
    sent.clear()
    results = store.save_many(
        [
            req(tok(4), 0, {"d": b"4"}),
            req(tok(2), 1, {"c": b"3"}),  # read at version 1: merged
            req(tok(1), 1, {"a": b"2"}),
            req(tok(3), 0, {"a": b"9"}),  # its tombstone's row: never brought back
        ]
    )
    assert [r.status for r in results] == [SaveStatus.SAVED] * 3 + [SaveStatus.GONE]
    assert [r.version for r in results[:3]] == [1, 3, 2]
    assert results[1].merged_from is not None and results[2].merged_from is None
    fast = sent[: sent.index("COMMIT") + 1]
    # tok(1): its row, its attribute; tok(2): no row matched; tok(3): met the tombstone's row;
    # tok(4): its row, its attribute.
    verbs = ["BEGIN", "UPDATE", "INSERT", "UPDATE", "INSERT", "INSERT", "INSERT", "COMMIT"]
    assert _verbs(fast) == verbs, sent
    s1, s2, s4 = (store.load("shop", tok(i)) for i in (1, 2, 4))
    assert s1 is not None and dict(s1.attributes) == {"a": b"2"}
    assert s2 is not None and dict(s2.attributes) == {"a": b"1", "b": b"2", "c": b"3"}
    assert s4 is not None and dict(s4.attributes) == {"d": b"4"}
    assert store.load("shop", tok(3)) is None


def test_sqlite_conflict_still_merges_under_the_lock(
    sqlite_store: tuple[SqlStore, list[str]],
) -> None:
    # The optimistic write writes nothing when the version moved on; the general path merges.
    store, _ = sqlite_store
    store.save_many([req(tok(1), 0, {"a": b"1"})])
    store.save_many([req(tok(1), 1, {"b": b"2"})])
    [res] = store.save_many([req(tok(1), 1, {"c": b"3"})])
    assert res.status is SaveStatus.SAVED and res.version == 3 and res.merged_from is not None
    s = store.load("shop", tok(1))
    assert s is not None and dict(s.attributes) == {"a": b"1", "b": b"2", "c": b"3"}


def test_sqlite_writes_keep_their_connection_out_of_the_pool(tmp_path: Path) -> None:
    # SQLAlchemy's checkout and checkin cost a sizeable part of SQLite's write: the one-session
    # writes reuse their own connection (stores/sql/rawpool.py); it is closed with the store.
    store = SqlStore(f"sqlite:///{tmp_path / 'p.db'}")
    checkouts: list[object] = []

    @event.listens_for(store.engine, "checkout")
    def _checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        checkouts.append(dbapi_conn)

    store.init_schema()
    store.save_many([req(tok(1), 0, {"a": b"0"})])
    checkouts.clear()
    for v in range(1, 6):
        [res] = store.save_many([req(tok(1), v, {"a": str(v).encode()})])
        assert res.status is SaveStatus.SAVED and res.version == v + 1
    assert checkouts == []
    raw, _ = store._raw._idle[-1]  # type: ignore[union-attr]
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        raw.execute("SELECT 1")


def test_sqlite_write_leaves_an_unchanged_owner_and_its_index_alone(tmp_path: Path) -> None:
    # Setting the owner column rewrites its index entry even to the same value (a page more in
    # every commit): a request that did not change the owner does not set it; one that did, or
    # a stale copy's write merged over another node's owner, still does.
    import sessionkeeper as sk

    store = SqlStore(f"sqlite:///{tmp_path / 'o.db'}")
    updates: list[str] = []

    @event.listens_for(store.engine, "connect")
    def _trace(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.set_trace_callback(
            lambda sql: updates.append(sql) if sql.lstrip().upper().startswith("UPDATE") else None
        )

    a = sk.SessionManager(store, write=sk.EndOfRequest(), node="a", housekeeping=False)
    b = sk.SessionManager(store, write=sk.EndOfRequest(), node="b", housekeeping=False)
    try:
        with a.request("shop") as s:
            s["n"] = 0
            s.owner = "alice"
            sid = s.id
        updates.clear()
        with a.request("shop", sid) as s:
            s["n"] = 1
        assert len(updates) == 1 and "owner =" not in updates[0], updates
        with a.request("shop", sid) as s:
            s.owner = "bob"
        assert len(updates) == 2 and "owner =" in updates[1], updates
        stored = store.load("shop", sid.split(".")[0])
        assert stored is not None and stored.owner == "bob" and stored.attributes["n"] == b"1"
        with b.request("shop", sid) as s:  # another node's copy gives it another owner
            s.owner = "carol"
        with a.request("shop", sid) as s:  # a's copy is stale: merged, its owner written
            s["n"] = 2
        stored = store.load("shop", sid.split(".")[0])
        assert stored is not None and stored.owner == "bob" and stored.attributes["n"] == b"2"
    finally:
        a.close()
        b.close()
        store.close()


def test_sqlite_full_write_replaces_the_attributes(
    sqlite_store: tuple[SqlStore, list[str]],
) -> None:
    store, _ = sqlite_store
    store.save_many([req(tok(1), 0, {"a": b"1", "b": b"2"})])
    [res] = store.save_many([req(tok(1), 1, {"c": b"3"}, full=True)])
    assert res.status is SaveStatus.SAVED
    s = store.load("shop", tok(1))
    assert s is not None and dict(s.attributes) == {"c": b"3"}


def _fast_status(store: SqlStore, like: str) -> dict[str, int]:
    """The session status variables ``like`` of the connection the next write takes: the fast
    path's own one (``stores/sql/rawpool.py``; a write before made it), outside a transaction."""
    pool = store._raw
    assert pool is not None and len(pool._idle) == 1
    raw = pool.get()
    try:
        with raw.cursor() as cur:
            cur.execute(f"SHOW SESSION STATUS WHERE Variable_name LIKE '{like}'")
            return {str(name): int(value) for name, value in cur.fetchall()}
    finally:
        pool.put(raw)


def _session_status(store: SqlStore) -> dict[str, int]:
    """The ``Com_*`` counters of the connection the next write takes."""
    return _fast_status(store, "Com\\_%")


def test_mariadb_update_is_one_commit_without_select(mysql_url: str) -> None:
    store = SqlStore(mysql_url, table_prefix=unique_name())
    try:
        store.save_many([req(tok(1), 0, {"a": b"1"})])
        before = _session_status(store)
        [res] = store.save_many([req(tok(1), 1, {"a": b"2"})])
        after = _session_status(store)
        assert res.status is SaveStatus.SAVED and res.version == 2
        delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        delta.pop("Com_show_status", None)
        # Nothing reads the row. The deadline fence's test (stores/fence.py) is a SET in the
        # same text just before the COMMIT (an error when the server is late): an OK packet,
        # not a result set to parse.
        assert delta.get("Com_select", 0) == 0, delta
        assert delta.get("Com_set_option", 0) == 1, delta
        assert delta.get("Com_update", 0) == 1, delta
        assert delta.get("Com_commit", 0) == 1, delta
        assert delta.get("Com_rollback", 0) == 0, delta
        # And no more: the session row, the attribute, the fence's test, the COMMIT. Each
        # statement of the text is a result set PyMySQL parses in Python.
        assert sum(delta.values()) == 4, delta
    finally:
        store.tables.metadata.drop_all(store.engine)
        store.close()


def _tmp_tables(store: SqlStore) -> int:
    return _fast_status(store, "Created\\_tmp\\_tables")["Created_tmp_tables"]


@pytest.mark.parametrize("changed", [1, 3, 12])
def test_mariadb_update_builds_no_temporary_table(mysql_url: str, changed: int) -> None:
    # The attribute upsert of an update read its rows from a derived table, which MariaDB
    # builds as a temporary table per write; up to 8 rows each is a statement of its own. The
    # answers are the same, the stale write's included (nothing written, then merged).
    store = SqlStore(mysql_url, table_prefix=unique_name())
    try:
        store.save_many([req(tok(1), 0, {"a": b"1", "b": b"2"})])
        baseline = -_tmp_tables(store) + _tmp_tables(store)  # what SHOW STATUS builds itself
        new = {f"k{i}": str(i).encode() for i in range(changed)}
        before = _tmp_tables(store)
        [res] = store.save_many([req(tok(1), 1, new, frozenset({"b"}))])
        built = _tmp_tables(store) - before - baseline
        assert res.status is SaveStatus.SAVED and res.version == 2
        assert built == 0 if changed <= 8 else built > 0
        [stale] = store.save_many([req(tok(1), 1, {"c": b"3", "a": b"9"})])
        assert stale.status is SaveStatus.SAVED and stale.merged_from is not None
        s = store.load("shop", tok(1))
        assert s is not None and dict(s.attributes) == {**new, "a": b"9", "c": b"3"}
    finally:
        store.tables.metadata.drop_all(store.engine)
        store.close()


def test_mariadb_users_engine_writes_one_statement_at_a_time(mysql_url: str) -> None:
    # A user's engine connects without CLIENT.MULTI_STATEMENTS: the same transaction, statement
    # by statement, with the same answers.
    import sqlalchemy as sa

    engine = sa.create_engine(mysql_url.replace("mysql://", "mysql+pymysql://", 1))
    store = SqlStore(engine, table_prefix=unique_name())
    try:
        store.save_many([req(tok(1), 0, {"a": b"1", "b": b"2"})])
        [res] = store.save_many([req(tok(1), 1, {"a": b"3"}, frozenset({"b"}))])
        assert res.status is SaveStatus.SAVED and res.version == 2
        [merged] = store.save_many([req(tok(1), 1, {"c": b"4"})])  # stale: merged under lock
        assert merged.status is SaveStatus.SAVED and merged.merged_from is not None
        [again] = store.save_many([req(tok(1), 0, {"x": b"1"})])  # exists: not created twice
        assert (
            again.status is SaveStatus.SAVED
            and again.version == 4
            and again.merged_from is not None
        )
        s = store.load("shop", tok(1))
        assert s is not None and s.attributes["a"] == b"3" and "b" not in s.attributes
        assert s.attributes["c"] == b"4"
    finally:
        store.tables.metadata.drop_all(engine)
        store.close()
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"])
def test_concurrent_request_ends_are_each_stored_when_they_return(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Group commit on a real database: batches of several sessions (the locking path) beside
    # single writes (the short path), from 6 threads; each request's value is in the store, read
    # back from the database, as soon as its request returned.
    import threading

    import sessionkeeper as sk

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'g.db'}"
    else:
        url = request.getfixturevalue("postgres_url" if backend == "postgresql" else "mysql_url")
    store = SqlStore(url, table_prefix=unique_name())
    m = sk.SessionManager(store, write=sk.EndOfRequest(), node="a", housekeeping=False)
    threads, per_thread = 6, 15
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        try:
            with m.request("shop") as s:
                s["n"] = 0
                sid = s.id
            start.wait(WAIT_S)
            for i in range(1, per_thread + 1):
                with m.request("shop", sid) as s:
                    s["n"] = i
                stored = store.load("shop", sid.split(".")[0])
                assert stored is not None and stored.attributes["n"] == str(i).encode()
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert not any(t.is_alive() for t in ts)
        assert errors == []
    finally:
        m.close()
        store.tables.metadata.drop_all(store.engine)
        store.close()


def _pg_pid(store: SqlStore) -> int:
    """The backend of the store's one pooled connection (pool_size 1)."""
    fairy = store.engine.raw_connection()
    try:
        return int(fairy.driver_connection.info.backend_pid)
    finally:
        fairy.close()


def pg_sent(store: SqlStore, tmp_path: Path, fn: Any) -> list[list[str]]:
    """The messages (type, then fields) the store's one pooled connection sent to the server
    during ``fn()``, from libpq's own trace of the connection."""
    trace = tmp_path / "libpq.trace"
    fairy = store.engine.raw_connection()
    pgconn = fairy.driver_connection.pgconn
    fairy.close()
    with trace.open("w") as out:
        pgconn.trace(out.fileno())
        try:
            fn()
        finally:
            pgconn.untrace()
    lines = [line.split("\t") for line in trace.read_text().splitlines()]
    return [f[3:] for f in lines if len(f) > 3 and f[1] == "F"]


def _pg_messages(store: SqlStore, tmp_path: Path, fn: Any) -> list[str]:
    """The statements (Query and Parse messages) the store's connection sent during ``fn()``."""
    return [m[-1] for m in pg_sent(store, tmp_path, fn) if m[0] in ("Query", "Parse")]


def test_postgres_write_sends_one_statement_and_no_ping(postgres_url: str, tmp_path: Path) -> None:
    # A pre-ping at checkout is a round trip, and PostgreSQL counts it as a transaction: the
    # changed session's write is the only statement its connection sends.
    store = SqlStore(postgres_url, table_prefix=unique_name(), pool_size=1, max_overflow=0)
    try:
        store.save_many([req(tok(1), 0, {"a": b"1"})])
        results: list[Any] = []
        sent = _pg_messages(
            store, tmp_path, lambda: results.extend(store.save_many([req(tok(1), 1, {"a": b"2"})]))
        )
        assert [r.status for r in results] == [SaveStatus.SAVED]
        assert len(sent) == 1 and "UPDATE" in sent[0], sent
    finally:
        store.tables.metadata.drop_all(store.engine)
        store.close()


def _kill_then_call(store: SqlStore, call: str, kill: Callable[[], None]) -> None:
    """One session written, ``kill()`` of the store's one pooled connection by the server, then
    ``call``: answered on a fresh connection with no retry of the store's own, nothing lost."""
    store.save_many([req(tok(1), 0, {"a": b"1"})])
    kill()
    if call == "write":
        [res] = store.save_many([req(tok(1), 1, {"a": b"2"})])
        assert res.status is SaveStatus.SAVED and res.version == 2
    s = store.load("shop", tok(1))
    assert s is not None and s.attributes["a"] == (b"2" if call == "write" else b"1")
    assert store.stats.retries == 0 and store.stats.errors == 0


@pytest.mark.parametrize("call", ["write", "load"])
def test_postgres_dead_pooled_connection_is_replaced_at_once(postgres_url: str, call: str) -> None:
    # Nothing pings a pooled connection: one whose backend was terminated fails its statement,
    # and the call runs once more on a fresh connection, with no retry of the store's own (no
    # backoff) and nothing lost.
    import psycopg

    store = SqlStore(postgres_url, table_prefix=unique_name(), pool_size=1, max_overflow=0)
    dead: list[int] = []

    def kill() -> None:
        dead.append(_pg_pid(store))
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (dead[0],)).fetchone() == (
                True,
            )

    try:
        _kill_then_call(store, call, kill)
        assert _pg_pid(store) != dead[0]
    finally:
        store.tables.metadata.drop_all(store.engine)
        store.close()


def _mysql_kill(url: str, thread_ids: list[int]) -> None:
    from urllib.parse import urlsplit

    import pymysql

    parts = urlsplit(url)
    admin = pymysql.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username)
    try:
        for dead in thread_ids:
            admin.cursor().execute(f"KILL CONNECTION {int(dead)}")
    finally:
        admin.close()


def test_mariadb_writes_on_connections_of_their_own_not_the_pools(mysql_url: str) -> None:
    # Checking a connection out of SQLAlchemy's pool and back in cost about 30 µs of client
    # CPU per write (stores/sql/rawpool.py): a write takes one of the fast path's own.
    store = SqlStore(mysql_url, table_prefix=unique_name())
    checkouts: list[object] = []
    event.listen(store.engine, "checkout", lambda conn, _rec, _proxy: checkouts.append(conn))
    try:
        store.save_many([req(tok(1), 0, {"a": b"0"})])
        checkouts.clear()
        for v in range(1, 4):
            [res] = store.save_many([req(tok(1), v, {"a": b"%d" % v})])
            assert res.status is SaveStatus.SAVED and res.version == v + 1
        assert checkouts == []
        assert store._raw is not None and len(store._raw._idle) == 1
        assert store._raw._recycle_s == 3600  # the engine's pool_recycle, before wait_timeout
    finally:
        store.tables.metadata.drop_all(store.engine)
        store.close()


def test_mariadb_killed_own_connections_are_all_replaced_at_once(mysql_url: str) -> None:
    # The server ended the fast path's two idle connections (a restart ends them all): the write
    # fails on the first, closes the other unused, and runs once more on a new one, with no
    # retry of the store's own (no backoff) and nothing lost or doubled.
    store = SqlStore(mysql_url, table_prefix=unique_name())
    try:
        store.save_many([req(tok(1), 0, {"a": b"1"})])
        pool = store._raw
        assert pool is not None
        a, b = pool.get(), pool.get()
        pool.put(a)
        pool.put(b)
        _mysql_kill(mysql_url, [a.thread_id(), b.thread_id()])
        [res] = store.save_many([req(tok(1), 1, {"a": b"2"})])
        assert res.status is SaveStatus.SAVED and res.version == 2
        assert store.stats.retries == 0 and store.stats.errors == 0
        assert [c.thread_id() for c, _ in pool._idle] not in ([a.thread_id()], [b.thread_id()])
        s = store.load("shop", tok(1))
        assert s is not None and s.version == 2 and s.attributes["a"] == b"2"
    finally:
        store.tables.metadata.drop_all(store.engine)
        store.close()


def test_mariadb_all_dropped_pool_connections_are_replaced_at_once(mysql_url: str) -> None:
    # A server restart ends every connection: the fast path's own and the ten the pool holds
    # idle. The write fails on its own, then the first pooled one it takes fails its ping,
    # which makes the pool replace all the older ones: the next is new. No retry of the
    # store's own, whatever the pool's size.
    store = SqlStore(mysql_url, table_prefix=unique_name(), pool_size=10, max_overflow=0)
    try:
        store.save_many([req(tok(1), 0, {"a": b"1"})])
        fairies = [store.engine.raw_connection() for _ in range(10)]
        dead = [f.driver_connection.thread_id() for f in fairies]
        for f in fairies:
            f.close()
        assert store._raw is not None
        _mysql_kill(mysql_url, dead + [c.thread_id() for c, _ in store._raw._idle])
        [res] = store.save_many([req(tok(1), 1, {"a": b"2"})])
        assert res.status is SaveStatus.SAVED and res.version == 2
        assert store.stats.retries == 0 and store.stats.errors == 0
    finally:
        store.tables.metadata.drop_all(store.engine)
        store.close()


@pytest.mark.parametrize("call", ["write", "load"])
def test_mariadb_killed_pooled_connection_is_replaced_at_once(mysql_url: str, call: str) -> None:
    # As on PostgreSQL: a pooled connection the server killed fails its statement and the call
    # runs once more on a fresh one.
    store = SqlStore(mysql_url, table_prefix=unique_name(), pool_size=1, max_overflow=0)

    def kill() -> None:
        # The pool's one connection, and the fast path's own idle ones (the writes').
        fairy = store.engine.raw_connection()
        dead = [fairy.driver_connection.thread_id()]
        fairy.close()
        assert store._raw is not None and store._raw._idle
        _mysql_kill(mysql_url, dead + [c.thread_id() for c, _ in store._raw._idle])

    try:
        _kill_then_call(store, call, kill)
    finally:
        store.tables.metadata.drop_all(store.engine)
        store.close()
