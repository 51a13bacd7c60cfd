"""The invalidation feed in SQL: one row per ended id in ``{prefix}invalidations``, numbered by
an autoincrement sequence (the cursor), written in the tombstone's transaction, pruned with the
tombstones (``kept_until``, indexed). Every node reads it each poll: one indexed range query."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..base import Invalidation
from .schema import Tables


def append(conn: Connection, tables: Tables, app: str, token: str, until: float) -> None:
    """In the tombstone's transaction. The schema row's lock, held to commit, orders the
    sequence by commit: without it PostgreSQL and InnoDB hand out numbers at insert, and a
    reader could pass a smaller number that commits later. Invalidations are rare (login,
    logout), so they queue on it briefly; nothing else locks that row (SQLite's write lock
    already serializes every write)."""
    t, f = tables.schema, tables.invalidations
    conn.execute(sa.select(t.c.id).where(t.c.id == 1).with_for_update())
    conn.execute(sa.insert(f).values(app=app, token=token, kept_until=until))


def since(
    conn: Connection, tables: Tables, cursor: str | None, limit: int
) -> tuple[list[Invalidation], str]:
    f = tables.invalidations
    if cursor is None:
        last = conn.execute(sa.select(sa.func.max(f.c.seq))).scalar()
        return [], str(last or 0)
    after = int(cursor)
    stmt = sa.select(f.c.seq, f.c.app, f.c.token).where(f.c.seq > after).order_by(f.c.seq)
    rows = conn.execute(stmt.limit(limit)).all()
    entries = [Invalidation(str(app), str(token)) for _, app, token in rows]
    return entries, str(rows[-1][0] if rows else after)


def prune(conn: Connection, tables: Tables, before: float) -> None:
    f = tables.invalidations
    conn.execute(sa.delete(f).where(f.c.kept_until < before))
