"""Reading many sessions at once: every session of an owner (through the ``(app, owner)`` index)
and a page of an app's sessions in token order (the console's listing). Each is one read
transaction of :class:`~.store.SqlStore`; the statements of single sessions are in :mod:`.ops`.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ...errors import CorruptSessionData
from ..base import StoredSession
from . import schema as sch
from .ops import SqlOps
from .schema import Layout

log = logging.getLogger("sessionkeeper.store.sql")


def sessions_of(ops: SqlOps, conn: Connection, app: str, owner: str) -> list[StoredSession]:
    s = ops.tables.sessions
    return _select(ops, conn, sa.and_(s.c.app == app, s.c.owner == owner), None)


def list_sessions(
    ops: SqlOps, conn: Connection, app: str, after: str | None, limit: int
) -> list[StoredSession]:
    s = ops.tables.sessions
    where = s.c.app == app if after is None else sa.and_(s.c.app == app, s.c.token > after)
    return _select(ops, conn, where, limit)


def _select(
    ops: SqlOps, conn: Connection, where: sa.ColumnElement[bool], limit: int | None
) -> list[StoredSession]:
    """The stored sessions ``where`` selects, in token order, with their attributes. A row that
    cannot be read is logged and left out: one bad session must not hide the others."""
    s = ops.tables.sessions
    single = ops.layout is Layout.SINGLE_ROW
    stmt = (
        sa.select(*ops._session_columns(data=single))
        .where(s.c.tombstone_until.is_(None), where)
        .order_by(s.c.token)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = conn.execute(stmt).mappings().all()
    keys = [(str(r["app"]), str(r["token"])) for r in rows]
    attributes = {} if single else ops._attributes_of(conn, keys)
    out = []
    for (app, token), row in zip(keys, rows, strict=True):
        try:
            attrs = ops._decode(app, token, row["data"]) if single else attributes[(app, token)]
            out.append(sch.stored_session(app, token, row, attrs))
        except CorruptSessionData as exc:
            log.warning("listing: %s, left out", exc)
    return out
