"""The store timeouts without a server: which driver errors mean "unavailable" (by type), and
what each store asks of its driver (connect, read and statement timeouts) from ``timeout_s``."""

from __future__ import annotations

import psycopg
import pymysql
import pytest

from sessionkeeper.stores.sql.dialects import MysqlDialect, PostgresDialect


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
