"""MySQL 8 and MariaDB 10.5+ through PyMySQL: what differs from :class:`.dialects.SqlDialect`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import Insert

from . import timeouts
from .dialects import Row, SqlDialect


class MysqlDialect(SqlDialect):
    """MySQL 8 and MariaDB 10.5+ through PyMySQL, at READ COMMITTED so that ``FOR UPDATE`` of a
    row that does not exist takes no gap lock (gap locks deadlock concurrent creators)."""

    name = "mysql"

    #: Lost or refused connections (a read, write or connect timeout is 2003 or 2013), server
    #: shutdown, too many connections, lock wait timeout, deadlock (the transaction was rolled
    #: back and can be run again), a statement stopped by MariaDB's ``max_statement_time``
    #: (1969) or MySQL's ``max_execution_time`` (3024).
    _TRANSIENT_CODES = frozenset(
        {1040, 1053, 1205, 1213, 1927, 1969, 2002, 2003, 2006, 2013, 2055, 3024, 4031}
    )

    def engine_options(self) -> dict[str, Any]:
        return {
            **super().engine_options(),
            "pool_recycle": 3600,  # before the server's wait_timeout drops idle connections
            "isolation_level": "READ COMMITTED",
            "connect_args": {"charset": "utf8mb4", **timeouts.mysql_args(self.timeout_s)},
            # PyMySQL sends a ROLLBACK round trip whenever asked: the reset below asks only
            # when a transaction is open (``prepare_engine``).
            "pool_reset_on_return": None,
        }

    def prepare_engine(self, engine: sa.Engine, *, owned: bool) -> None:
        if not owned:
            return  # a user's engine keeps its own reset on return and client flags

        @event.listens_for(engine, "do_connect")
        def _flags(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
            # A write of one session is then one round trip (``fastsave_mysql.MysqlFastSave``). Every
            # statement we send binds its values; SQLAlchemy's own flags (FOUND_ROWS) are kept.
            from pymysql.constants import CLIENT

            cparams["client_flag"] = cparams.get("client_flag", 0) | CLIENT.MULTI_STATEMENTS

        @event.listens_for(engine, "reset")
        def _reset(dbapi_conn: Any, _record: Any, state: Any) -> None:
            # What ``pool_reset_on_return="rollback"`` does, minus the round trip after a
            # committed write: the server's last answer says whether a transaction is open.
            from pymysql.constants import SERVER_STATUS

            if state.terminate_only or state.transaction_was_reset:
                return
            if getattr(dbapi_conn, "server_status", SERVER_STATUS.SERVER_STATUS_IN_TRANS) & (
                SERVER_STATUS.SERVER_STATUS_IN_TRANS
            ):
                dbapi_conn.rollback()

    def skip_locked(self, dialect: sa.Dialect) -> bool:
        version = tuple(dialect.server_version_info or ())
        if getattr(dialect, "is_mariadb", False):
            return version >= (10, 6)
        return version >= (8, 0, 1)

    # PyMySQL sends an executemany INSERT as multi-row INSERT statements of up to about 1 MB
    # each (``Cursor.max_stmt_length``), below any ``max_allowed_packet``: so new rows and upserts
    # keep the shared executemany. It sends any other executemany one row per round trip.

    def _upsert(self, table: sa.Table) -> Insert:
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
        rows: Sequence[Row],
        columns: Sequence[str],
    ) -> None:
        # The rows are locked and known to exist, so an upsert is an update here, sent as
        # multi-row statements.
        if not rows:
            return
        stmt = mysql.insert(table)
        stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in columns})
        conn.execute(stmt, [dict(r) for r in rows])

    def delete_rows(
        self, conn: Connection, table: sa.Table, rows: Sequence[Row], key: Sequence[str]
    ) -> None:
        # One ``(key) IN ((...), (...))`` per call. InnoDB may plan a full scan for it when the
        # list is a good part of the table, and a scanning DELETE waits on every row other
        # writers hold: hence the multi-table form, the only DELETE that takes an index hint.
        if not rows:
            return
        quote = conn.dialect.identifier_preparer
        columns = ", ".join(quote.quote(c) for c in key)
        keys = sa.bindparam(
            "keys", expanding=True, type_=sa.types.TupleType(*(table.c[c].type for c in key))
        )
        stmt = sa.text(
            f"DELETE t FROM {quote.format_table(table)} AS t FORCE INDEX (PRIMARY) "
            f"WHERE ({columns}) IN :keys"
        ).bindparams(keys)
        conn.execute(stmt, {"keys": [tuple(r[c] for c in key) for r in rows]})

    def delete_sessions(
        self, conn: Connection, table: sa.Table, keys: Sequence[tuple[str, str]]
    ) -> None:
        """One ``DELETE ... WHERE app = ? AND token = ?`` per session, all in one multi-statement
        text (our engines connect with ``CLIENT.MULTI_STATEMENTS``), else one executemany. InnoDB
        may plan a key-list DELETE as a scan, which waits on every row another sweeper claimed:
        concurrent sweepers deadlocked on it. One statement per claimed key locks nothing else."""
        from pymysql.constants import CLIENT

        if not keys:
            return
        raw = conn.connection.driver_connection
        if raw is None or not raw.client_flag & CLIENT.MULTI_STATEMENTS:
            rows = [{"app": app, "token": token} for app, token in keys]
            SqlDialect.delete_rows(self, conn, table, rows, ("app", "token"))  # the executemany
            return
        name = conn.dialect.identifier_preparer.format_table(table)
        one = f"DELETE FROM {name} WHERE app = %s AND token = %s"
        params = tuple(part.encode("utf-8") for key in keys for part in key)
        # PyMySQL reads the statements' results before the connection's next command.
        conn.exec_driver_sql(";".join([one] * len(keys)), params)

    def is_transient(self, orig: BaseException | None) -> bool:
        import pymysql

        if isinstance(orig, pymysql.err.InterfaceError):
            return True  # the connection is already closed
        if not isinstance(orig, pymysql.err.MySQLError):
            return False
        return bool(orig.args) and orig.args[0] in self._TRANSIENT_CODES

    def max_value_bytes(self, conn: Connection) -> int | None:
        # The server drops the connection for a statement over max_allowed_packet (error 2006,
        # indistinguishable from an outage), and refuses a value over about half of it even in a
        # statement that fits (1153, MariaDB 10.11). PyMySQL's escaping (at worst two bytes each)
        # stays within the packet at half.
        packet = int(conn.execute(sa.text("SELECT @@max_allowed_packet")).scalar_one())
        return (packet - 64 * 1024) // 2
