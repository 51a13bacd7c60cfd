"""A group commit's batch of several sessions on PostgreSQL and MariaDB: one transaction sent as
one round trip (PostgreSQL: ``BEGIN``, each session's one-statement write, ``COMMIT`` in psycopg's
pipeline mode; MariaDB: each session's statements and one ``COMMIT`` in one multi-statement
text), where it was the general path's locking read and bulk writes, five round trips. Each
session keeps its own answer: a stale one is merged and a deleted one is GONE, as on the
general path."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sessionkeeper.errors import StoreError
from sessionkeeper.stores import RetryPolicy, SaveStatus
from sessionkeeper.stores.sql import SqlStore
from tests.services import unique_name

from .contract import T0, req, tok
from .test_sql_one_transaction import _mysql_kill, _session_status
from .test_sql_one_transaction import pg_sent as _sent


def _open(url: str) -> SqlStore:
    # pool_size 1: the trace and counters below see every message of the store's connection.
    return SqlStore(
        url,
        table_prefix=unique_name(),
        pool_size=1,
        max_overflow=0,
        retry=RetryPolicy(attempts=1, backoff_s=0),
    )


@pytest.fixture(params=["postgresql", "mysql"])
def store(request: pytest.FixtureRequest) -> Iterator[SqlStore]:
    s = _open(
        request.getfixturevalue("postgres_url" if request.param == "postgresql" else "mysql_url")
    )
    try:
        yield s
    finally:
        s.tables.metadata.drop_all(s.engine)
        s.close()


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[SqlStore]:
    s = _open(postgres_url)
    try:
        yield s
    finally:
        s.tables.metadata.drop_all(s.engine)
        s.close()


def test_postgres_batch_is_one_transaction_in_one_round_trip(
    pg_store: SqlStore, tmp_path: Path
) -> None:
    store = pg_store
    store.save_many([req(tok(1), 0, {"a": b"1"}), req(tok(2), 0, {"a": b"1", "b": b"2"})])
    batch = [
        req(tok(2), 1, {"a": b"2"}, frozenset({"b"})),
        req(tok(3), 0, {"c": b"3"}),  # a creation beside the updates
        req(tok(1), 1, {"a": b"2"}),
    ]
    results: list[Any] = []
    sent = _sent(store, tmp_path, lambda: results.extend(store.save_many(batch)))
    assert [(r.status, r.version, r.merged_from) for r in results] == [
        (SaveStatus.SAVED, 2, None),
        (SaveStatus.SAVED, 1, None),
        (SaveStatus.SAVED, 2, None),
    ]
    # One Sync: the client waited for the server once. BEGIN and COMMIT are among the queries.
    assert [m[0] for m in sent].count("Sync") == 1, sent
    queries = [m[-1] for m in sent if m[0] == "Query" or m[0] == "Parse"]
    assert sum("BEGIN" in q for q in queries) == 1 and sum("COMMIT" in q for q in queries) == 1
    # Just before the COMMIT, the deadline fence's test (stores/fence.py), once for the batch.
    assert "COMMIT" in queries[-1] and "clock_timestamp()" in queries[-2], queries
    assert sum("sessionkeeper fence" in q for q in queries) == 1, queries
    for t, attrs in [(tok(1), {"a": b"2"}), (tok(2), {"a": b"2"}), (tok(3), {"c": b"3"})]:
        s = store.load("shop", t)
        assert s is not None and dict(s.attributes) == attrs


def test_batch_answers_each_session_its_own(store: SqlStore) -> None:
    store.save_many([req(tok(i), 0, {"a": b"1"}) for i in (1, 2, 3)])
    store.save_many([req(tok(2), 1, {"b": b"2"})])  # tok(2) is at version 2 now
    assert store.delete("shop", tok(3), tombstone_until=T0 + 60)
    results = store.save_many(
        [
            req(tok(3), 1, {"a": b"9"}),  # deleted meanwhile: never brought back
            req(tok(2), 1, {"c": b"3"}),  # read at version 1: merged
            req(tok(1), 1, {"a": b"2"}),
            req(tok(4), 0, {"d": b"4"}),
        ]
    )
    assert [r.status for r in results] == [SaveStatus.GONE] + [SaveStatus.SAVED] * 3
    assert results[1].version == 3 and results[1].merged_from is not None
    assert results[2].version == 2 and results[2].merged_from is None
    assert store.load("shop", tok(3)) is None
    s2, s1, s4 = (store.load("shop", tok(i)) for i in (2, 1, 4))
    assert s2 is not None and dict(s2.attributes) == {"a": b"1", "b": b"2", "c": b"3"}
    assert s1 is not None and dict(s1.attributes) == {"a": b"2"}
    assert s4 is not None and dict(s4.attributes) == {"d": b"4"}


def test_batch_with_one_session_twice_takes_the_general_path(store: SqlStore) -> None:
    store.save_many([req(tok(1), 0, {"a": b"1"})])
    results = store.save_many([req(tok(1), 1, {"a": b"2"}), req(tok(1), 1, {"b": b"3"})])
    assert [r.status for r in results] == [SaveStatus.SAVED] * 2
    s = store.load("shop", tok(1))
    assert s is not None and s.version == 3 and dict(s.attributes) == {"a": b"2", "b": b"3"}


def _kill(store: SqlStore) -> None:
    """The server ends the store's one pooled connection (and on MariaDB the fast path's own
    idle ones, which its writes take: ``stores/sql/rawpool.py``)."""
    fairy = store.engine.raw_connection()
    raw = fairy.driver_connection
    fairy.close()
    if store.kind == "postgresql":
        import psycopg

        url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (raw.info.backend_pid,))
    else:
        own = [c for c, _ in store._raw._idle] if store._raw is not None else []
        url = store.engine.url.render_as_string(hide_password=False)
        _mysql_kill(url, [conn.thread_id() for conn in [raw, *own]])


def test_batch_on_a_dead_pooled_connection_runs_once_more_at_once(store: SqlStore) -> None:
    # As a one-session write: the pooled connection was ended by the server, the batch fails
    # on it and runs again on a fresh connection, with no retry of the store's own and nothing
    # lost or doubled.
    store.save_many([req(tok(i), 0, {"a": b"1"}) for i in (1, 2)])
    _kill(store)
    results = store.save_many([req(tok(i), 1, {"a": b"2"}) for i in (1, 2)])
    assert [(r.status, r.version) for r in results] == [(SaveStatus.SAVED, 2)] * 2
    assert store.stats.retries == 0 and store.stats.errors == 0
    for i in (1, 2):
        s = store.load("shop", tok(i))
        assert s is not None and s.version == 2 and s.attributes["a"] == b"2"


def test_postgres_batch_that_fails_on_one_session_writes_none_of_it(pg_store: SqlStore) -> None:
    # One transaction: a statement that fails (a name longer than VARCHAR(255); MariaDB's
    # column holds 1,020 bytes) rolls back the sessions written before it in the batch, and the
    # connection is left clean for the next.
    store = pg_store
    store.save_many([req(tok(i), 0, {"a": b"1"}) for i in (1, 2)])
    with pytest.raises(StoreError):
        store.save_many([req(tok(1), 1, {"a": b"2"}), req(tok(2), 1, {"n" * 300: b"2"})])
    s = store.load("shop", tok(1))
    assert s is not None and s.version == 1 and s.attributes["a"] == b"1"
    results = store.save_many([req(tok(i), 1, {"a": b"3"}) for i in (1, 2)])
    assert [(r.status, r.version) for r in results] == [(SaveStatus.SAVED, 2)] * 2


def test_mariadb_batch_is_one_text_with_one_commit(mysql_url: str) -> None:
    store = _open(mysql_url)
    try:
        store.save_many([req(tok(i), 0, {"a": b"1"}) for i in (1, 2, 3)])
        before = _session_status(store)
        results = store.save_many([req(tok(i), 1, {"a": b"2"}) for i in (3, 1, 2)])
        after = _session_status(store)
        assert [(r.status, r.version) for r in results] == [(SaveStatus.SAVED, 2)] * 3
        delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        delta.pop("Com_show_status", None)
        # Per session its row and its attribute; then the fence's test (a SET) and the
        # COMMIT. No locking read (the general path's SELECT ... FOR UPDATE and bulk INSERTs).
        assert delta == {
            "Com_update": 3,
            "Com_insert_select": 3,
            "Com_set_option": 1,
            "Com_commit": 1,
        }, delta
    finally:
        store.tables.metadata.drop_all(store.engine)
        store.close()


def test_batch_begun_after_its_fence_changes_nothing(store: SqlStore) -> None:
    # The deadline fence (stores/fence.py) of each session's statement: measured against a
    # server an hour behind, every one of them is late. The backend's own answers, before the
    # shared rules send the writes again.
    store.save_many([req(tok(i), 0, {"a": b"1"}) for i in (1, 2)])
    assert store.server_clock is not None
    store.server_clock.measure(lambda: time.time() - 3600.0)
    batch = [req(tok(1), 1, {"a": b"2"}), req(tok(3), 0, {"c": b"3"}), req(tok(2), 1, {"b": b"2"})]
    assert [r.status for r in store._save_batch(batch)] == [SaveStatus.FENCED] * 3
    for i in (1, 2):
        s = store.load("shop", tok(i))
        assert s is not None and s.version == 1 and dict(s.attributes) == {"a": b"1"}
    assert store.load("shop", tok(3)) is None
    # Sent again by the shared rules after measuring the clock again: written once.
    results = store.save_many(batch)
    assert [(r.status, r.version) for r in results] == [
        (SaveStatus.SAVED, 2),
        (SaveStatus.SAVED, 1),
        (SaveStatus.SAVED, 2),
    ]


def _pool_status(store: SqlStore) -> dict[str, int]:
    """The ``Com_*`` counters of the pool's one connection: the general path's."""
    with store.engine.connect() as conn, conn.connection.driver_connection.cursor() as cur:
        cur.execute("SHOW SESSION STATUS WHERE Variable_name LIKE 'Com\\_%%'")
        return {str(name): int(value) for name, value in cur.fetchall()}


def test_mariadb_batch_over_max_batch_takes_the_bulk_statements(mysql_url: str) -> None:
    # A flush of many sessions: the general path's bulk statements, cheaper than one statement
    # per session from a few dozen on.
    store = _open(mysql_url)
    assert store._fast is not None
    n = store._fast.max_batch + 1
    try:
        store.save_many([req(tok(i), 0, {"a": b"1"}) for i in range(n)])
        before = _pool_status(store)
        results = store.save_many([req(tok(i), 1, {"a": b"2"}) for i in range(n)])
        after = _pool_status(store)
        assert [(r.status, r.version) for r in results] == [(SaveStatus.SAVED, 2)] * n
        delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
        assert "Com_update" not in delta and delta["Com_insert"] == 2, delta
    finally:
        store.tables.metadata.drop_all(store.engine)
        store.close()
