"""Stores: where sessions outlive a process. ``open_store`` turns a URL into one.

| URL | store |
|---|---|
| ``memory://`` | :class:`MemoryStore` (this process only) |
| ``sqlite:///path/to/file.db`` | :class:`~sessionkeeper.stores.sql.SqlStore` on SQLite (WAL) |
| ``postgresql://user@host/db`` | ``SqlStore`` on PostgreSQL (psycopg 3) |
| ``mysql://user@host/db`` | ``SqlStore`` on MySQL/MariaDB (PyMySQL) |
| ``redis://host:6379/0``, ``rediss://`` | :class:`~sessionkeeper.stores.redis.RedisStore` |
| ``redis+sentinel://h1:26379,h2:26379/service/0`` | ``RedisStore`` on the master Sentinel names |
| ``redis+cluster://h1:7000,h2:7001`` | ``RedisStore`` on Redis Cluster |

Drivers are imported only when their store is opened.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError
from .base import (
    AppCounts,
    ExpiredSession,
    Invalidation,
    RetryPolicy,
    SaveRequest,
    SaveResult,
    SaveStatus,
    Store,
    StoredSession,
    StoreStats,
    Touch,
)
from .memory import MemoryStore

__all__ = [
    "AppCounts",
    "ExpiredSession",
    "Invalidation",
    "MemoryStore",
    "RetryPolicy",
    "SaveRequest",
    "SaveResult",
    "SaveStatus",
    "Store",
    "StoreStats",
    "StoredSession",
    "Touch",
    "open_store",
]


def open_store(target: str | Store, **options: Any) -> Store:
    """A store from a URL (see the module docstring), or ``target`` itself if it is a store.

    ``options`` go to the store's constructor (``layout=``, ``table_prefix=``, ``retry=``...).
    """
    if isinstance(target, Store):
        if options:
            raise ConfigurationError("store options apply only when the store is given as a URL")
        return target
    if not isinstance(target, str) or ("://" not in target and target != "memory"):
        raise ConfigurationError(
            f"store must be a Store or a URL such as sqlite:///sessions.db, got {target!r}"
        )
    scheme = target.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme == "memory" or target == "memory":
        return MemoryStore(**options)
    if scheme in ("sqlite", "postgresql", "postgres", "mysql", "mariadb"):
        from .sql import SqlStore

        return SqlStore(target, **options)
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisStore

        return RedisStore(target, **options)
    raise ConfigurationError(
        f"unknown store URL scheme {scheme!r}: use memory, sqlite, postgresql, mysql or redis"
    )
