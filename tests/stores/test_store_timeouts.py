"""The store timeouts without a server: which driver errors mean "unavailable" (by type), and
what each store asks of its driver (connect, read and statement timeouts) from ``timeout_s``."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from sessionkeeper.errors import StoreUnavailable
from sessionkeeper.stores import RetryPolicy
from sessionkeeper.stores.redis import RedisStore
from sessionkeeper.stores.sql import SqlStore
from sessionkeeper.stores.sql.dialects import MysqlDialect, PostgresDialect
from sessionkeeper.stores.sql.pg_connection import BoundedConnection
from sessionkeeper.stores.sql.timeouts import postgres_params


def _raw(store: SqlStore) -> Any:
    """A connection of the store's pool, as the driver made it."""
    return store.engine.raw_connection().driver_connection


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.errors.ConnectionTimeout("connection timeout expired"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.InterfaceError("the connection is closed"),
        psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
        psycopg.errors.LockNotAvailable("canceling statement due to lock timeout"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_postgres_timeouts_and_lost_connections_are_transient(exc: BaseException) -> None:
    assert PostgresDialect().is_transient(exc)


def test_postgres_other_errors_are_not_transient() -> None:
    class NamedLikeIt(Exception):
        pass

    NamedLikeIt.__name__ = "OperationalError"  # a name is not a type
    assert not PostgresDialect().is_transient(NamedLikeIt("no"))
    assert not PostgresDialect().is_transient(psycopg.errors.UndefinedTable("no such table"))
    assert not PostgresDialect().is_transient(psycopg.ProgrammingError("bad query"))


@pytest.mark.parametrize(
    "exc",
    [
        pymysql.err.OperationalError(2013, "Lost connection to MySQL server (timed out)"),
        pymysql.err.OperationalError(2003, "Can't connect to MySQL server (timed out)"),
        pymysql.err.OperationalError(1969, "Query execution was interrupted (max_statement_time)"),
        pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"),
        pymysql.err.InterfaceError(0, ""),
    ],
    ids=lambda e: f"{type(e).__name__}-{e.args[0]}",
)
def test_mysql_timeouts_and_lost_connections_are_transient(exc: BaseException) -> None:
    assert MysqlDialect().is_transient(exc)


def test_mysql_other_errors_are_not_transient() -> None:
    class InterfaceError(Exception):
        pass

    assert not MysqlDialect().is_transient(InterfaceError(2013, "a name is not a type"))
    assert not MysqlDialect().is_transient(pymysql.err.ProgrammingError(1146, "no such table"))
    assert not MysqlDialect().is_transient(pymysql.err.IntegrityError(1062, "duplicate"))


# -- what each store asks of its driver ---------------------------------------------------------


def test_defaults_are_a_few_seconds() -> None:
    sql = SqlStore("mysql://root@127.0.0.1:1/test")
    assert sql.engine.pool.timeout() == 3.0  # type: ignore[attr-defined]
    redis = RedisStore("redis://127.0.0.1:1/0")
    kw = redis.client.get_connection_kwargs()
    assert kw["socket_timeout"] == 3.0 and kw["socket_connect_timeout"] == 3.0


def test_mysql_connect_arguments() -> None:
    options = MysqlDialect(2.5).engine_options()
    args = options["connect_args"]
    assert (args["connect_timeout"], args["read_timeout"], args["write_timeout"]) == (2.5,) * 3
    assert args["init_command"] == (
        "SET SESSION innodb_lock_wait_timeout = 2 /*M!, max_statement_time = 2.000 */"
    )
    # No ping on checkout: a dead pooled connection is replaced when its statement fails.
    assert "pool_pre_ping" not in options and options["pool_timeout"] == 2.5


def test_mysql_session_limits_on_the_server(mysql_url: str) -> None:
    store = SqlStore(mysql_url, timeout_s=2.5)
    try:
        conn = _raw(store)
        with conn.cursor() as cur:
            cur.execute("SELECT @@innodb_lock_wait_timeout, @@max_statement_time")
            assert cur.fetchone() == (2, 2.0)
    finally:
        store.close()


def test_postgres_params_keep_the_urls_choices() -> None:
    params = postgres_params({"options": "-c search_path=x", "connect_timeout": 9}, 1.5)
    assert params["connect_timeout"] == 9
    assert params["options"] == "-c search_path=x -c statement_timeout=1200 -c lock_timeout=1200"
    assert postgres_params({}, 0.5)["connect_timeout"] == 2  # libpq's least


def test_postgres_session_limits_on_the_server(postgres_url: str) -> None:
    store = SqlStore(postgres_url + "?options=-c%20search_path%3Dpublic", timeout_s=1.5)
    try:
        conn = _raw(store)
        assert isinstance(conn, BoundedConnection) and conn.read_timeout_s == 1.5
        settings = ("statement_timeout", "lock_timeout", "search_path")
        assert [conn.execute(f"SHOW {name}").fetchone()[0] for name in settings] == [
            "1200ms",
            "1200ms",
            "public",
        ]
    finally:
        store.close()


def test_postgres_client_deadline_closes_a_connection_the_server_does_not_answer(
    postgres_url: str,
) -> None:
    store = SqlStore(postgres_url, timeout_s=0.5)
    try:
        conn = _raw(store)
        conn.execute("SET statement_timeout = 0")  # the server would not stop it
        conn.commit()
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match="no answer") as info:
            conn.execute("SELECT pg_sleep(60)")
        assert time.monotonic() - started < 30  # a bound on a hang, not a speed target
        assert conn.closed and PostgresDialect().is_transient(info.value)
    finally:
        store.close()


def test_a_users_engine_is_left_as_given(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    store = SqlStore(engine, timeout_s=0.5)
    try:
        conn = _raw(store)
        assert not isinstance(conn, BoundedConnection)
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "0"
    finally:
        store.close()
        engine.dispose()


# -- a server that accepts and never answers ----------------------------------------------------


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A loopback port whose kernel accepts connections (the listen backlog) and where nothing
    ever answers: a hung server as a client sees it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    "url", ["postgresql://postgres@127.0.0.1:{}/test", "mysql://root@127.0.0.1:{}/test"]
)
def test_a_server_that_never_answers_is_unavailable(url: str, black_hole: int) -> None:
    # On PostgreSQL this is psycopg's ConnectionTimeout, once a StoreError.
    store = SqlStore(url.format(black_hole), timeout_s=0.5, retry=RetryPolicy(attempts=2))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"timeout|timed out"):
        store.load("shop", "t" * 32)
    assert time.monotonic() - started < 30  # a bound on a hang, not a speed target
    assert store.stats.retries == 1


def test_a_redis_that_never_answers_is_unavailable(black_hole: int) -> None:
    store = RedisStore(
        f"redis://127.0.0.1:{black_hole}/0", timeout_s=0.5, retry=RetryPolicy(attempts=2)
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="Timeout"):
        store.load("shop", "t" * 32)
    assert time.monotonic() - started < 30
