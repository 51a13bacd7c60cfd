"""What differs between SQLite, PostgreSQL and MySQL/MariaDB, in one place.

Everything else in :mod:`.store` is written once for all three: every write transaction first
locks the batch's session rows in one ``SELECT ... FOR UPDATE`` (SQLite: ``BEGIN IMMEDIATE`` takes
the database's write lock instead), decides each session's fate in Python, then writes with a
constant number of bulk statements. A dialect only supplies the engine setup, the attribute
upsert, a bulk update of locked rows, whether ``SKIP LOCKED`` is available, and which driver
errors are worth retrying.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.sql.dml import Insert

from ...errors import ConfigurationError

#: How long a SQLite writer waits for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT_S = 30.0
#: Execution option naming the BEGIN statement our SQLite ``begin`` listener emits.
_BEGIN_OPTION = "sessionkeeper_begin"

_DRIVERS = {
    "sqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}


def normalize_url(url: str) -> URL:
    """``url`` with this library's driver for a bare scheme (psycopg 3, PyMySQL); an explicit
    ``+driver`` is kept. :class:`ConfigurationError` for anything that is not such a URL."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ConfigurationError(f"not a database URL: {url!r} ({exc})") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in _DRIVERS:
        raise ConfigurationError(
            f"unsupported database {backend!r} in store URL: use sqlite, postgresql or mysql"
        )
    if not driver:
        parsed = parsed.set(drivername=_DRIVERS[backend])
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigurationError(
            "an in-memory SQLite database is private to one connection: use sqlite:///path.db "
            "(or memory:// for a MemoryStore)"
        )
    return parsed


class SqlDialect:
    """The shared behaviour; PostgreSQL uses it unchanged apart from error codes."""

    name = "sql"

    def engine_options(self, connect_timeout_s: float) -> dict[str, Any]:
        return {"pool_pre_ping": True}

    def prepare_engine(self, engine: sa.Engine, *, owned: bool) -> None:
        """Install event listeners. ``owned``: we created the engine (not the user)."""

    def begin_options(self, *, write: bool) -> dict[str, Any]:
        """Execution options for a transaction's connection."""
        return {}

    def skip_locked(self, dialect: sa.Dialect) -> bool:
        return False

    def upsert_attributes(self, table: sa.Table) -> Insert:
        raise NotImplementedError

    def by_primary_key(self, stmt: sa.Select[Any], table: sa.Table) -> sa.Select[Any]:
        """``stmt``, made to find ``table``'s rows through the primary key."""
        return stmt

    def bulk_update(
        self,
        conn: Connection,
        table: sa.Table,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str],
    ) -> None:
        """Set ``columns`` of existing, locked rows (keyed by app and token): one executemany."""
        if not rows:
            return
        stmt = (
            sa.update(table)
            .where(table.c.app == sa.bindparam("k_app"), table.c.token == sa.bindparam("k_token"))
            .values({c: sa.bindparam(f"v_{c}") for c in columns})
        )
        params = [
            {"k_app": r["app"], "k_token": r["token"], **{f"v_{c}": r[c] for c in columns}}
            for r in rows
        ]
        conn.execute(stmt, params)

    def is_transient(self, orig: BaseException | None) -> bool:
        """Whether a driver exception means "try again" (lost connection, lock timeout)."""
        return False


class SqliteDialect(SqlDialect):
    """A file in WAL mode. pysqlite's own transaction handling is switched off and we emit
    ``BEGIN IMMEDIATE`` for writes: a deferred transaction that later upgrades its read lock to
    a write lock can fail at once with "database is locked" when another process writes, while
    ``BEGIN IMMEDIATE`` waits (up to the busy timeout) for the lock it needs from the start."""

    name = "sqlite"

    def engine_options(self, connect_timeout_s: float) -> dict[str, Any]:
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}}

    def prepare_engine(self, engine: sa.Engine, *, owned: bool) -> None:
        default_begin = "BEGIN" if owned else None

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            if owned:
                # We emit BEGIN ourselves. On a user's engine pysqlite keeps its own handling
                # for the user's transactions; an explicit BEGIN works alongside it.
                dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = NORMAL")
            finally:
                cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            begin = conn.get_execution_options().get(_BEGIN_OPTION, default_begin)
            if begin:
                conn.exec_driver_sql(begin)

    def begin_options(self, *, write: bool) -> dict[str, Any]:
        return {_BEGIN_OPTION: "BEGIN IMMEDIATE" if write else "BEGIN"}

    def upsert_attributes(self, table: sa.Table) -> Insert:
        stmt = sqlite.insert(table)
        return stmt.on_conflict_do_update(
            index_elements=[table.c.app, table.c.token, table.c.name],
            set_={"value": stmt.excluded.value},
        )

    def is_transient(self, orig: BaseException | None) -> bool:
        # SQLITE_BUSY (5) and SQLITE_LOCKED (6), with or without an extended code.
        code = getattr(orig, "sqlite_errorcode", None)
        if isinstance(orig, sqlite3.OperationalError) and isinstance(code, int):
            return code & 0xFF in (5, 6)
        return isinstance(orig, sqlite3.OperationalError) and "locked" in str(orig)


class PostgresDialect(SqlDialect):
    name = "postgresql"

    def engine_options(self, connect_timeout_s: float) -> dict[str, Any]:
        # libpq takes whole seconds and treats 1 as 2.
        timeout = max(2, math.ceil(connect_timeout_s))
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": timeout}}

    def skip_locked(self, dialect: sa.Dialect) -> bool:
        return True

    def upsert_attributes(self, table: sa.Table) -> Insert:
        stmt = postgresql.insert(table)
        return stmt.on_conflict_do_update(
            index_elements=[table.c.app, table.c.token, table.c.name],
            set_={"value": stmt.excluded.value},
        )

    #: SQLSTATE classes worth retrying: connection exception, transaction rollback
    #: (serialization failure, deadlock), insufficient resources, operator intervention
    #: (admin shutdown), system error; and 55P03 lock_not_available.
    _TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")

    def is_transient(self, orig: BaseException | None) -> bool:
        state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if state is None:
            # psycopg reports a failed connection attempt without a SQLSTATE.
            return type(orig).__name__ in ("OperationalError", "InterfaceError")
        return str(state).startswith(self._TRANSIENT_CLASSES) or state == "55P03"


class MysqlDialect(SqlDialect):
    """MySQL 8 and MariaDB 10.5+ through PyMySQL, at READ COMMITTED so that ``FOR UPDATE`` of a
    row that does not exist takes no gap lock (gap locks deadlock concurrent creators)."""

    name = "mysql"

    #: Lost or refused connections, server shutdown, too many connections, lock wait timeout
    #: and deadlock (the transaction was rolled back and can be run again).
    _TRANSIENT_CODES = frozenset({1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055, 4031})

    def engine_options(self, connect_timeout_s: float) -> dict[str, Any]:
        return {
            "pool_pre_ping": True,
            "pool_recycle": 3600,  # before the server's wait_timeout drops idle connections
            "isolation_level": "READ COMMITTED",
            "connect_args": {
                "connect_timeout": max(1, math.ceil(connect_timeout_s)),
                "charset": "utf8mb4",
            },
        }

    def skip_locked(self, dialect: sa.Dialect) -> bool:
        version = tuple(dialect.server_version_info or ())
        if getattr(dialect, "is_mariadb", False):
            return version >= (10, 6)
        return version >= (8, 0, 1)

    def upsert_attributes(self, table: sa.Table) -> Insert:
        stmt = mysql.insert(table)
        return stmt.on_duplicate_key_update(value=stmt.inserted.value)

    def by_primary_key(self, stmt: sa.Select[Any], table: sa.Table) -> sa.Select[Any]:
        # On a small table InnoDB may plan a full scan, and a locking read waits on every row it
        # scans, including other sessions' rows locked by other writers or sweepers.
        hint = "FORCE INDEX (PRIMARY)"
        return stmt.with_hint(table, hint, "mysql").with_hint(table, hint, "mariadb")

    def bulk_update(
        self,
        conn: Connection,
        table: sa.Table,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str],
    ) -> None:
        # PyMySQL runs an executemany UPDATE as one round trip per row, but batches an INSERT
        # into multi-row statements. The rows are locked and known to exist, so an upsert is
        # an update here, in a few round trips.
        if not rows:
            return
        stmt = mysql.insert(table)
        stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in columns})
        conn.execute(stmt, [dict(r) for r in rows])

    def is_transient(self, orig: BaseException | None) -> bool:
        args: tuple[Any, ...] = getattr(orig, "args", None) or ()
        if type(orig).__name__ == "InterfaceError":
            return True  # PyMySQL: the connection is already closed
        return bool(args) and args[0] in self._TRANSIENT_CODES


def dialect_for(name: str) -> SqlDialect:
    if name == "sqlite":
        return SqliteDialect()
    if name == "postgresql":
        return PostgresDialect()
    if name in ("mysql", "mariadb"):
        return MysqlDialect()
    raise ConfigurationError(f"unsupported SQL dialect {name!r}: use sqlite, postgresql or mysql")
