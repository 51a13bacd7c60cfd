"""SQL stores: :class:`SqlStore` on SQLite, PostgreSQL or MySQL/MariaDB (SQLAlchemy Core).

See ``docs/stores-sql.md`` for the layouts, the schema and the dialect notes.
"""

from __future__ import annotations

from .schema import SCHEMA_VERSION, Layout
from .store import SqlStore, TransientSqlError

__all__ = ["SCHEMA_VERSION", "Layout", "SqlStore", "TransientSqlError"]
