"""How the SQL of :mod:`.ops` and :mod:`.sweep` cuts a batch of sessions into statements, and
names their keys."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .dialects import SqlDialect

T = TypeVar("T")
Key = tuple[str, str]

#: Sessions per statement when a batch names its keys in a WHERE clause (at most two bind
#: parameters each; fewer where the dialect allows fewer parameters, see ``SqlOps``).
KEYS = 5_000
#: Rows per bulk write statement (``SqlDialect.insert_rows``...): a 10,000-session flush is one
#: statement per kind of write, while a huge batch does not build one unbounded statement.
ROWS = 10_000


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def keys_clause(table: sa.Table, keys: Iterable[Key]) -> sa.ColumnElement[bool]:
    """``(app = a AND token IN (...)) OR ...``: uses the primary key on every database."""
    by_app: dict[str, list[str]] = {}
    for app, token in keys:
        by_app.setdefault(app, []).append(token)
    return sa.or_(*(sa.and_(table.c.app == a, table.c.token.in_(t)) for a, t in by_app.items()))


def delete_by_key(
    conn: Connection, dialect: SqlDialect, table: sa.Table, rows: Sequence[Mapping[str, str]]
) -> None:
    """Delete the rows of the sessions ``rows`` name (``app``, ``token``) through the dialect,
    which finds them by primary key: InnoDB plans a full scan for a plain ``DELETE ... WHERE
    app = ? AND token IN (...)`` where they are a good part of the table, and that scan waits on
    every row other sweepers or writers hold locked (concurrent sweepers deadlocked on it)."""
    for chunk in chunks(rows, ROWS):
        dialect.delete_rows(conn, table, chunk, ("app", "token"))
