"""What differs between SQLite, PostgreSQL and MySQL/MariaDB, in one place.

Everything else in :mod:`.store` is written once for all three: every write transaction of the
general path (:mod:`.ops`; the one-session writes of :mod:`.fastsave` check the version in the
write instead) first locks the batch's session rows in one ``SELECT ... FOR UPDATE`` (SQLite: ``BEGIN IMMEDIATE`` takes
the database's write lock instead), decides each session's fate in Python, then writes with a
constant number of bulk statements. A dialect only supplies the engine setup, how those bulk
statements are sent (an executemany on SQLite; statements of many rows each on PostgreSQL and
MySQL), whether ``SKIP LOCKED`` is available, and which driver errors are worth retrying.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.sql.dml import Insert

from ...errors import ConfigurationError
from . import batches
from .timeouts import DEFAULT_TIMEOUT_S

Row = Mapping[str, Any]

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
    """The shared behaviour. The bulk writes (``insert_rows``, ``upsert_attributes``,
    ``bulk_update``, ``delete_rows``) each send their rows in one call, executemany by default;
    the caller splits a large batch into chunks."""

    name = "sql"
    #: Bind parameters one statement may carry (PostgreSQL's protocol allows 65,535).
    max_params = 65_535

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        #: The bound on one wait for the server: to connect, for a statement's answer.
        self.timeout_s = timeout_s

    def engine_options(self) -> dict[str, Any]:
        """Options of an engine we create. No checkout waits for a pooled connection longer
        than ``timeout_s``. Pooled connections are not pinged on checkout (a round trip, and a
        transaction on PostgreSQL, before every statement): a dead one fails its statement, and
        the store runs the call once more on a fresh connection (``SqlStore._reconnecting``)."""
        return {"pool_timeout": self.timeout_s}

    def prepare_engine(self, engine: sa.Engine, *, owned: bool) -> None:
        """Install event listeners. ``owned``: we created the engine (not the user)."""

    def begin_options(self, *, write: bool) -> dict[str, Any]:
        """Execution options for a transaction's connection."""
        return {}

    def skip_locked(self, dialect: sa.Dialect) -> bool:
        return False

    def upsert_attributes(self, conn: Connection, table: sa.Table, rows: Sequence[Row]) -> None:
        """Insert attribute rows, or set the value of those that exist: one executemany."""
        if rows:
            conn.execute(self._upsert(table), list(rows))

    def _upsert(self, table: sa.Table) -> Insert:
        raise NotImplementedError

    def insert_rows(self, conn: Connection, table: sa.Table, rows: Sequence[Row]) -> None:
        """Insert new rows: one executemany."""
        if rows:
            conn.execute(sa.insert(table), list(rows))

    def by_primary_key(self, stmt: sa.Select[Any], table: sa.Table) -> sa.Select[Any]:
        """``stmt``, made to find ``table``'s rows through the primary key."""
        return stmt

    def bulk_update(
        self,
        conn: Connection,
        table: sa.Table,
        rows: Sequence[Row],
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

    def delete_sessions(
        self, conn: Connection, table: sa.Table, keys: Sequence[tuple[str, str]]
    ) -> None:
        """Delete the rows of ``table`` (sessions or attributes) of the sessions ``keys`` name,
        rows a sweep has claimed: key lists in WHERE clauses, each found through the primary
        key."""
        for chunk in batches.chunks(keys, batches.key_chunk(self)):
            conn.execute(sa.delete(table).where(batches.keys_clause(table, chunk)))

    def delete_rows(
        self, conn: Connection, table: sa.Table, rows: Sequence[Row], key: Sequence[str]
    ) -> None:
        """Delete the rows whose ``key`` columns equal one of ``rows``: one executemany (in
        process on SQLite, each row found through the primary key)."""
        if not rows:
            return
        stmt = sa.delete(table).where(*(table.c[c] == sa.bindparam(f"k_{c}") for c in key))
        conn.execute(stmt, [{f"k_{c}": r[c] for c in key} for r in rows])

    def is_transient(self, orig: BaseException | None) -> bool:
        """Whether a driver exception means "try again" (lost connection, lock timeout)."""
        return False

    def max_value_bytes(self, conn: Connection) -> int | None:
        """The largest attribute value a statement can carry to this server, if limited."""
        return None


class SqliteDialect(SqlDialect):
    """A file in WAL mode. pysqlite's own transaction handling is switched off and we emit
    ``BEGIN IMMEDIATE`` for writes: a deferred transaction that later upgrades its read lock to
    a write lock can fail at once with "database is locked" when another process writes, while
    ``BEGIN IMMEDIATE`` waits (up to the busy timeout) for the lock it needs from the start."""

    name = "sqlite"
    max_params = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999

    def engine_options(self) -> dict[str, Any]:
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

    def _upsert(self, table: sa.Table) -> Insert:
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


class _Column(list[Any]):
    """One column of a bulk write, sent to PostgreSQL as a binary array (see
    :meth:`PostgresDialect.prepare_engine`)."""


class PostgresDialect(SqlDialect):
    name = "postgresql"

    def prepare_engine(self, engine: sa.Engine, *, owned: bool) -> None:
        if owned:
            # Connect, statement and lock timeouts, and a client-side deadline (see the module).
            from . import pg_connection

            pg_connection.install(engine, self.timeout_s)
        # psycopg dumps a plain list as a text array, escaping every element in Python (a
        # bytea array of 10,000 x 1 KB took 0.5 s to send and parse); in binary it takes 0.04 s.
        # Only our own list type is dumped so: a user's lists are left alone. (A connection
        # opened before the store was built still sends text arrays: slower, as correct.)
        from psycopg.types.array import ListBinaryDumper

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.adapters.register_dumper(_Column, ListBinaryDumper)

    def skip_locked(self, dialect: sa.Dialect) -> bool:
        return True

    # psycopg pipelines an executemany, but the server still runs one statement per row. Each
    # bulk write is instead one statement whose rows arrive as one array per column, unnested
    # into a derived table: ``unnest(CAST(:app AS VARCHAR(64)[]), ...) AS v(app, ...)``. Its
    # text is the same whatever the number of rows (compiled once, where a multi-row VALUES of
    # 5,000 rows took SQLAlchemy 1-4 s to compile; no 65,535-parameter limit), and the casts
    # type every column even when all of its values are NULL.

    @staticmethod
    def _unnest(table: sa.Table, columns: Sequence[str]) -> sa.TableValuedAlias:
        # Untyped parameters: SQLAlchemy's ARRAY type would copy each into a plain list.
        arrays = [
            sa.cast(sa.bindparam(f"u_{c}"), postgresql.ARRAY(table.c[c].type)) for c in columns
        ]
        return (
            sa.func.unnest(*arrays)
            .table_valued(*(sa.column(c, table.c[c].type) for c in columns))
            .render_derived(name="v")
        )

    @staticmethod
    def _arrays(rows: Sequence[Row], columns: Sequence[str]) -> dict[str, list[Any]]:
        return {f"u_{c}": _Column(r[c] for r in rows) for c in columns}

    def _insert_select(self, table: sa.Table, columns: Sequence[str]) -> postgresql.Insert:
        v = self._unnest(table, columns)
        return postgresql.insert(table).from_select(list(columns), sa.select(*v.c))

    def insert_rows(self, conn: Connection, table: sa.Table, rows: Sequence[Row]) -> None:
        if rows:
            columns = list(rows[0])
            conn.execute(self._insert_select(table, columns), self._arrays(rows, columns))

    def upsert_attributes(self, conn: Connection, table: sa.Table, rows: Sequence[Row]) -> None:
        if not rows:
            return
        columns = ["app", "token", "name", "value"]
        stmt = self._insert_select(table, columns)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.app, table.c.token, table.c.name],
            set_={"value": stmt.excluded.value},
        )
        conn.execute(stmt, self._arrays(rows, columns))

    def bulk_update(
        self,
        conn: Connection,
        table: sa.Table,
        rows: Sequence[Row],
        columns: Sequence[str],
    ) -> None:
        if not rows:
            return
        v = self._unnest(table, ["app", "token", *columns])
        stmt = (
            sa.update(table)
            .where(table.c.app == v.c.app, table.c.token == v.c.token)
            .values({c: v.c[c] for c in columns})
        )
        conn.execute(stmt, self._arrays(rows, ["app", "token", *columns]))

    def delete_rows(
        self, conn: Connection, table: sa.Table, rows: Sequence[Row], key: Sequence[str]
    ) -> None:
        if rows:
            v = self._unnest(table, key)
            stmt = sa.delete(table).where(*(table.c[c] == v.c[c] for c in key))
            conn.execute(stmt, self._arrays(rows, key))

    #: SQLSTATE classes worth retrying: connection exception, transaction rollback
    #: (serialization failure, deadlock), insufficient resources, operator intervention
    #: (admin shutdown), system error; and 55P03 lock_not_available.
    _TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")

    def is_transient(self, orig: BaseException | None) -> bool:
        import psycopg

        if not isinstance(orig, psycopg.Error):
            return False
        if orig.sqlstate is None:
            # No answer from the server: a refused, lost or timed-out connection (psycopg's
            # ConnectionTimeout, our read deadline), an already closed one (InterfaceError).
            return isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)
        return orig.sqlstate.startswith(self._TRANSIENT_CLASSES) or orig.sqlstate == "55P03"


# It subclasses SqlDialect above; kept in its own module for length.
from .mysql_dialect import MysqlDialect  # noqa: E402


def dialect_for(name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> SqlDialect:
    if name == "sqlite":
        return SqliteDialect(timeout_s)
    if name == "postgresql":
        return PostgresDialect(timeout_s)
    if name in ("mysql", "mariadb"):
        return MysqlDialect(timeout_s)
    raise ConfigurationError(f"unsupported SQL dialect {name!r}: use sqlite, postgresql or mysql")
