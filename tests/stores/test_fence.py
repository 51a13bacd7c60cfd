"""The deadline fence of a one-round-trip write (src/sessionkeeper/stores/fence.py), on the real
servers: a write the server begins after its fence does nothing at all and is told apart from a
conflict; a store whose measured clock offset is wrong still writes, after one re-measure.

A fence already past is made by measuring the server's clock with a probe an hour behind it:
every fence the store then sends lies an hour before the server's time, as when the server's
clock stepped an hour forward after the store measured it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from sessionkeeper.errors import StoreUnavailable
from sessionkeeper.stores import RetryPolicy, SaveStatus, Store
from sessionkeeper.stores.fence import ServerClock
from sessionkeeper.stores.redis import RedisStore
from sessionkeeper.stores.sql import SqlStore
from tests import services

from .contract import req, tok
from .test_sql_one_transaction import _pg_pid

HOUR_S = 3600.0


def _behind(clock: ServerClock | None) -> None:
    """Measure ``clock`` against a server an hour behind the real one."""
    assert clock is not None
    clock.measure(lambda: time.time() - HOUR_S)


def _drop_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["postgresql", "mysql", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[SqlStore | RedisStore]:
    kind = request.param
    url = services.require("postgres" if kind == "postgresql" else kind)
    retry = RetryPolicy(attempts=2, backoff_s=0)
    s: SqlStore | RedisStore
    if kind == "redis":
        prefix = services.unique_name("skfence") + ":"
        s = RedisStore(url, key_prefix=prefix, retry=retry)
    else:
        s = SqlStore(url, table_prefix=services.unique_name("skfence"), retry=retry)
    try:
        yield s
    finally:
        if isinstance(s, SqlStore):
            s.tables.metadata.drop_all(s.engine)
        else:
            _drop_keys(url, prefix)
        s.close()


def test_a_write_begun_after_its_fence_changes_nothing(store: SqlStore | RedisStore) -> None:
    store.save_many([req(tok(1), 0, {"a": b"1", "b": b"2"})])
    _behind(store.server_clock)
    update = req(tok(1), 1, {"a": b"changed", "c": b"new"}, frozenset({"b"}), last_access_at=2e9)
    # The backend's own answer, before the shared rules send it again.
    assert store._save_batch([update])[0].status is SaveStatus.FENCED
    _behind(store.server_clock)
    assert store._save_batch([req(tok(2), 0, {"a": b"1"})])[0].status is SaveStatus.FENCED
    stored = store.load("shop", tok(1))
    assert stored is not None and stored.version == 1
    assert dict(stored.attributes) == {"a": b"1", "b": b"2"}
    assert stored.last_access_at == req(tok(1)).last_access_at
    assert store.load("shop", tok(2)) is None


def test_a_conflict_is_not_fenced(store: SqlStore | RedisStore) -> None:
    store.save_many([req(tok(1), 0, {"a": b"1"})])
    store.save_many([req(tok(1), 1, {"a": b"2"})])
    # In time but stale: a conflict (merged by the shared rules), never FENCED.
    [res] = store._save_batch([req(tok(1), 1, {"b": b"3"})])
    assert res.status is not SaveStatus.FENCED


def test_a_wrong_clock_offset_costs_one_measurement(store: SqlStore | RedisStore) -> None:
    store.save_many([req(tok(1), 0, {"a": b"1"})])
    clock = store.server_clock
    assert clock is not None
    _behind(clock)
    measured = clock.measurements
    [res] = store.save_many([req(tok(1), 1, {"a": b"2"})])
    assert res.status is SaveStatus.SAVED and res.version == 2
    assert store.stats.writes_fenced == 1 and clock.measurements == measured + 1
    stored = store.load("shop", tok(1))
    assert stored is not None and stored.version == 2 and dict(stored.attributes) == {"a": b"2"}
    # Measured right again: the next write is not refused.
    store.save_many([req(tok(1), 2, {"a": b"3"})])
    assert store.stats.writes_fenced == 1 and clock.measurements == measured + 1


def test_a_clock_far_ahead_only_weakens_the_fence(store: SqlStore | RedisStore) -> None:
    # Measured against a server an hour ahead: every fence an hour late. Nothing refused (the
    # protection is weaker until the next measurement), nothing lost or doubled.
    assert store.server_clock is not None
    store.server_clock.measure(lambda: time.time() + HOUR_S)
    store.save_many([req(tok(1), 0, {"a": b"1"})])
    [res] = store.save_many([req(tok(1), 1, {"a": b"2"})])
    assert res.status is SaveStatus.SAVED and res.version == 2
    assert store.stats.writes_fenced == 0


class _ClockAlwaysBehind(RedisStore):
    """A Redis whose clock reads an hour behind every time it is asked (a clock stepping
    forward between every measurement and every write)."""

    def _server_time(self) -> float:
        return super()._server_time() - HOUR_S


def test_a_write_fenced_again_after_remeasuring_is_retried_then_unavailable(
    redis_url: str,
) -> None:
    prefix = services.unique_name("skfence") + ":"
    s: Store = _ClockAlwaysBehind(
        redis_url, key_prefix=prefix, retry=RetryPolicy(attempts=2, backoff_s=0)
    )
    try:
        with pytest.raises(StoreUnavailable):
            s.save_many([req(tok(1), 0, {"a": b"1"})])
        # Each attempt: the write, then again at once after measuring again.
        assert s.stats.writes_fenced == 4 and s.stats.retries == 1
        assert s.load("shop", tok(1)) is None
    finally:
        _drop_keys(redis_url, prefix)
        s.close()


def test_server_clock_offset_is_the_midpoint_and_ages() -> None:
    now = [100.0]

    def probe() -> float:
        now[0] += 0.2  # the round trip: 0.2 s out, the server reads 5000, 0.2 s back
        server = 5000.0
        now[0] += 0.2
        return server

    clock = ServerClock(1.5, max_age_s=60.0, monotonic=lambda: now[0])
    assert clock.fence(probe) == pytest.approx(5000.0 + 0.2 + 1.5)  # now is 100.4
    assert clock.measurements == 1
    now[0] += 59.0
    assert clock.fence(probe) == pytest.approx(5059.2 + 1.5)
    assert clock.measurements == 1
    now[0] += 2.0  # older than max_age_s: measured again
    clock.fence(probe)
    assert clock.measurements == 2
    clock.forget()
    clock.fence(probe)
    assert clock.measurements == 3


def test_the_immediate_retry_on_a_fresh_connection_carries_a_fence(postgres_url: str) -> None:
    # The pooled connection's backend is terminated: the write fails on it and runs once more at
    # once on a new connection (SqlStore._reconnecting). That attempt is fenced too (refused
    # here, its offset an hour off), and the write is then sent again after a re-measure: one
    # version up, nothing doubled.
    import psycopg

    store = SqlStore(
        postgres_url, table_prefix=services.unique_name("skfence"), pool_size=1, max_overflow=0
    )
    try:
        store.save_many([req(tok(1), 0, {"a": b"1"})])
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (_pg_pid(store),))
        _behind(store.server_clock)
        [res] = store.save_many([req(tok(1), 1, {"a": b"2"})])
        assert res.status is SaveStatus.SAVED and res.version == 2
        assert store.stats.writes_fenced == 1 and store.stats.retries == 0
        stored = store.load("shop", tok(1))
        assert stored is not None and stored.version == 2 and stored.attributes["a"] == b"2"
    finally:
        store.tables.metadata.drop_all(store.engine)
        store.close()
