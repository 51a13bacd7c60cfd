"""The sweep of a SQL store: expired sessions claimed a batch at a time, each by one sweeper,
then their tombstones and the invalidation feed's old entries. One transaction a batch."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from ..records import ExpiredSession
from . import feed
from . import schema as sch
from .batches import Key
from .dialects import SqlDialect
from .schema import Layout


def delete_expired(
    conn: Connection,
    tables: sch.Tables,
    layout: Layout,
    dialect: SqlDialect,
    before: float,
    limit: int,
) -> list[ExpiredSession]:
    s = tables.sessions
    expired = _claim(conn, tables, dialect, s.c.tombstone_until.is_(None), before, limit)
    _purge(conn, tables, layout, dialect, [(r["app"], r["token"]) for r in expired])
    if len(expired) < limit:
        # Tombstones only once the expired sessions are done: finding them walks the
        # expires_at index past every expired session, so doing it in each batch of a large
        # backlog made a sweep quadratic.
        done = _claim(conn, tables, dialect, s.c.tombstone_until.is_not(None), before, limit)
        _purge(conn, tables, layout, dialect, [(r["app"], r["token"]) for r in done])
        feed.prune(conn, tables, before)  # with the tombstones
    return [
        ExpiredSession(
            r["app"],
            r["token"],
            sch.lenient_float(r["last_access_at"]),
            sch.lenient_float(r["timeout_s"]),
            sch.lenient_owner(r["owner"]),
        )
        for r in expired
    ]


def _claim(
    conn: Connection,
    tables: sch.Tables,
    dialect: SqlDialect,
    which: sa.ColumnElement[bool],
    before: float,
    limit: int,
) -> Sequence[RowMapping]:
    """Lock up to ``limit`` rows with ``expires_at < before``, skipping rows another sweeper
    has locked (where the database can), so concurrent sweepers share the work."""
    s = tables.sessions
    stmt = (
        sa.select(s.c.app, s.c.token, s.c.last_access_at, s.c.timeout_s, s.c.owner)
        .where(which, s.c.expires_at < before)
        .order_by(s.c.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=dialect.skip_locked(conn.dialect))
    )
    # Through the expires_at index, so that only the rows returned are locked: where most rows
    # have expired InnoDB plans a full scan and a sort, which locks every expired row it reads,
    # and the other sweepers, finding them all locked, get an empty batch and stop.
    (index,) = (i for i in s.indexes if [c.name for c in i.columns] == ["expires_at"])
    hint = f"FORCE INDEX ({index.name})"
    stmt = stmt.with_hint(s, hint, "mysql").with_hint(s, hint, "mariadb")
    return conn.execute(stmt).mappings().all()


def _purge(
    conn: Connection, tables: sch.Tables, layout: Layout, dialect: SqlDialect, keys: Sequence[Key]
) -> None:
    dialect.delete_sessions(conn, tables.sessions, keys)
    if layout is Layout.MULTI_ROW:
        dialect.delete_sessions(conn, tables.attributes, keys)
