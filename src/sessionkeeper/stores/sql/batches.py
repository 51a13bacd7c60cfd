"""How the SQL of :mod:`.ops` and :mod:`.sweep` cuts a batch of sessions into statements, and
names their keys."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

import sqlalchemy as sa

if TYPE_CHECKING:  # dialects uses these helpers
    from .dialects import SqlDialect

T = TypeVar("T")
Key = tuple[str, str]

#: Sessions per statement when a batch names its keys in a WHERE clause (at most two bind
#: parameters each; fewer where the dialect allows fewer parameters, see ``key_chunk``).
KEYS = 5_000
#: Rows per bulk write statement (``SqlDialect.insert_rows``...): a 10,000-session flush is one
#: statement per kind of write, while a huge batch does not build one unbounded statement.
ROWS = 10_000


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def key_chunk(dialect: SqlDialect) -> int:
    """Sessions per ``keys_clause``: ``KEYS``, or fewer where the dialect allows fewer
    parameters."""
    return max(1, min(KEYS, dialect.max_params // 2 - 1))


def keys_clause(table: sa.Table, keys: Iterable[Key]) -> sa.ColumnElement[bool]:
    """``(app = a AND token IN (...)) OR ...``: uses the primary key on every database."""
    by_app: dict[str, list[str]] = {}
    for app, token in keys:
        by_app.setdefault(app, []).append(token)
    return sa.or_(*(sa.and_(table.c.app == a, table.c.token.in_(t)) for a, t in by_app.items()))
