"""Issue 11: one changed session is one transaction at the SQL server, the version check inside
it: nothing read before, nothing committed after. Counted by the servers themselves where a test
can see one connection's own counters (SQLite's statement trace, MariaDB's session status); the
PostgreSQL figures are in the floor benchmark (server counters need a private server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from sessionkeeper.stores import RetryPolicy, SaveStatus
from sessionkeeper.stores.sql import SqlStore
from tests.services import unique_name

from .contract import req, tok

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


def test_sqlite_full_write_replaces_the_attributes(
    sqlite_store: tuple[SqlStore, list[str]],
) -> None:
    store, _ = sqlite_store
    store.save_many([req(tok(1), 0, {"a": b"1", "b": b"2"})])
    [res] = store.save_many([req(tok(1), 1, {"c": b"3"}, full=True)])
    assert res.status is SaveStatus.SAVED
    s = store.load("shop", tok(1))
    assert s is not None and dict(s.attributes) == {"c": b"3"}


def _session_status(store: SqlStore) -> dict[str, int]:
    """The ``Com_*`` counters of the pooled connection, read on the driver connection (outside a
    SQLAlchemy transaction, which would add its own ROLLBACK)."""
    with store.engine.connect() as conn, conn.connection.driver_connection.cursor() as cur:
        cur.execute("SHOW SESSION STATUS WHERE Variable_name LIKE 'Com\\_%%'")
        return {str(name): int(value) for name, value in cur.fetchall()}


def test_mariadb_update_is_one_commit_without_select(mysql_url: str) -> None:
    # pool_size 1: every call of the store, and our look at the counters, share one session.
    store = SqlStore(mysql_url, table_prefix=unique_name(), pool_size=1, max_overflow=0)
    try:
        store.save_many([req(tok(1), 0, {"a": b"1"})])
        before = _session_status(store)
        [res] = store.save_many([req(tok(1), 1, {"a": b"2"})])
        after = _session_status(store)
        assert res.status is SaveStatus.SAVED and res.version == 2
        delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        delta.pop("Com_show_status", None)
        assert delta.get("Com_select", 0) == 0, delta
        assert delta.get("Com_commit", 0) == 1, delta
        assert delta.get("Com_rollback", 0) == 0, delta
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
