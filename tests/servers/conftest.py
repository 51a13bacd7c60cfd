"""Fixtures for the core's behaviour on the real servers.

``target`` is parametrized over PostgreSQL, MariaDB and Redis (the shared servers of
``tests/conftest.py``). Each test gets its own table prefix or key prefix, and its tables or keys
are dropped afterwards. ``make(**options)`` builds managers (nodes) on a shared :class:`FakeClock`,
each opening its own store from the URL, as separate processes would.

On Redis the fake clock decides what the sweep deletes (the expiry index holds the caller's
times), while Redis's own TTLs run on the server's clock and are relative (timeout plus
``grace_s``, refreshed on each write): moving the fake clock never makes Redis drop a key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import sessionkeeper as sk
from sessionkeeper.stores import RetryPolicy, Store, open_store
from tests.services import unique_name

SERVERS = ("postgresql", "mysql", "redis")
FIXTURE_OF = {"postgresql": "postgres_url", "mysql": "mysql_url", "redis": "redis_url"}


@dataclass
class Target:
    """One server and a prefix of this test alone."""

    kind: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    opened: list[Store] = field(default_factory=list)

    def open(self, **extra: Any) -> Store:
        store = open_store(self.url, **{**self.options, **extra})
        self.opened.append(store)
        return store

    def cleanup(self) -> None:
        for store in self.opened:
            store.close()
        drop(self.kind, self.url, self.options)


def target_options(kind: str, **extra: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"retry": RetryPolicy(attempts=3, backoff_s=0.01)}
    if kind == "redis":
        options["key_prefix"] = unique_name("sksrv") + ":"
    else:
        options["table_prefix"] = unique_name("sksrv")
    options.update(extra)
    return options


def drop(kind: str, url: str, options: dict[str, Any]) -> None:
    """Delete everything a test stored under its prefix."""
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(url)
        try:
            keys = list(client.scan_iter(match=f"{options['key_prefix']}*", count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i : i + 1000])
        finally:
            client.close()
        return
    from sessionkeeper.stores.sql import SqlStore

    store = SqlStore(url, table_prefix=options["table_prefix"], create_schema=False)
    try:
        store.tables.metadata.drop_all(store.engine)
    finally:
        store.close()


@pytest.fixture(params=SERVERS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    kind: str = request.param
    url: str = request.getfixturevalue(FIXTURE_OF[kind])
    t = Target(kind, url, target_options(kind))
    yield t
    t.cleanup()


@pytest.fixture
def clock() -> sk.FakeClock:
    return sk.FakeClock()


@pytest.fixture
def make(target: Target, clock: sk.FakeClock) -> Iterator[Any]:
    """``make(**options)``: a manager (node "a" unless told) with its own store on ``target``."""
    made: list[sk.SessionManager] = []

    def factory(**options: Any) -> sk.SessionManager:
        if "store" not in options:
            options["store"] = target.open()
        options.setdefault("clock", clock)
        options.setdefault("node", "a")
        options.setdefault("housekeeping", False)
        m = sk.SessionManager(**options)
        made.append(m)
        return m

    yield factory
    for m in made:
        m.close(deadline_s=0)
