"""RedisStore on replicated deployments the tests start themselves (tests/servers/redis_ha.py): a
Sentinel set (master, replica, one sentinel) and a 3-master cluster with a replica each. The store
contract on both, one slot per script, one script call per changed request, and WAIT."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

redis = pytest.importorskip("redis")

import sessionkeeper as sk  # noqa: E402
from sessionkeeper.errors import StoreUnavailable  # noqa: E402
from sessionkeeper.stores import open_store  # noqa: E402
from sessionkeeper.stores.redis import INDEX_BUCKETS, RedisStore  # noqa: E402
from tests import services  # noqa: E402
from tests.servers.redis_ha import ClusterSet, Deployment, SentinelSet, start  # noqa: E402

from .contract import T0, OwnerContract, StoreContract, req, tok  # noqa: E402
from .test_redis import check_deadline_ttl  # noqa: E402
from .test_redis_commands import command_calls  # noqa: E402
from .test_redis_migrate import check_migration  # noqa: E402

pytestmark = pytest.mark.slow  # starts its own Redis servers

GRACE_S = 600.0


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[SentinelSet]:
    d = start(SentinelSet)
    yield d
    d.close()


@pytest.fixture(scope="module")
def cluster_set() -> Iterator[ClusterSet]:
    d = start(ClusterSet)
    yield d
    d.close()


def store_on(d: Deployment, **options: Any) -> RedisStore:
    prefix = services.unique_name("skha")
    return RedisStore(d.url, key_prefix=prefix, grace_s=GRACE_S, **options)


class TestSentinelStore(StoreContract, OwnerContract):
    @pytest.fixture
    def store(self, sentinel_set: SentinelSet) -> Iterator[RedisStore]:
        s = store_on(sentinel_set)
        yield s
        s.close()


class TestClusterStore(StoreContract, OwnerContract):
    @pytest.fixture
    def store(self, cluster_set: ClusterSet) -> Iterator[RedisStore]:
        s = store_on(cluster_set)
        yield s
        s.close()


@pytest.mark.parametrize("kind", ["sentinel", "cluster"])
def test_the_ttl_ends_with_the_absolute_deadline_plus_grace(
    kind: str, request: pytest.FixtureRequest
) -> None:
    store = store_on(request.getfixturevalue(f"{kind}_set"))
    try:
        check_deadline_ttl(store, store.client)
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sentinel", "cluster"])
def test_sessions_in_the_old_layout_are_found_after_the_migration(
    kind: str, request: pytest.FixtureRequest
) -> None:
    store = store_on(request.getfixturevalue(f"{kind}_set"))
    try:
        check_migration(store, store.client, lambda: str(store.migrate_layout()))
    finally:
        store.close()


def test_urls_build_the_clients(sentinel_set: SentinelSet, cluster_set: ClusterSet) -> None:
    s = open_store(sentinel_set.url, key_prefix="skha_url:", timeout_s=1.5)
    c = open_store(cluster_set.url, key_prefix="skha_url:", timeout_s=1.5)
    assert isinstance(s, RedisStore) and isinstance(c, RedisStore)
    assert isinstance(c.client, redis.cluster.RedisCluster)
    assert s.client.connection_pool.service_name == "skmaster"
    assert s.client.connection_pool.connection_kwargs["socket_timeout"] == 1.5
    node = c.client.get_primaries()[0]
    assert c.client.get_redis_connection(node).get_connection_kwargs()["socket_timeout"] == 1.5
    assert s.tombstone_replicas == 1 and c.tombstone_replicas == 1  # both have replicas
    assert "redis+sentinel://" in s.describe() and "redis+cluster://" in c.describe()
    s.close()
    c.close()


def test_sentinel_url_with_password_and_db() -> None:
    s = RedisStore("redis+sentinel://:s3cr%40t@127.0.0.1:1,127.0.0.1:2/svc/3")
    pool = s.client.connection_pool
    assert pool.service_name == "svc" and pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["password"] == "s3cr@t"
    assert [
        c.connection_pool.connection_kwargs["port"] for c in pool.sentinel_manager.sentinels
    ] == [
        1,
        2,
    ]
    assert "s3cr" not in s.describe()
    with pytest.raises(sk.ConfigurationError):
        RedisStore("redis+sentinel://127.0.0.1:1")


def test_index_buckets_spread_one_app_over_the_masters(cluster_set: ClusterSet) -> None:
    store = store_on(cluster_set)
    masters = {cluster_set.master_of(store._bucket_keys("shop", b)[0]).port for b in range(64)}
    assert len(masters) == 3 and INDEX_BUCKETS == 64
    for i in range(20):  # a session's keys and its bucket's: one slot
        keys = store._session_keys("shop", tok(i)) + store._index_keys("shop", tok(i))
        assert len({store.client.keyslot(k) for k in keys}) == 1
    store.close()


def test_a_changed_request_is_one_script_call_on_the_cluster(cluster_set: ClusterSet) -> None:
    """Was: the cluster pipeline refused EVALSHA (RedisClusterException), and the design sent
    the session script, an index script and an SADD per batch."""
    prefix = services.unique_name("skha")
    m = sk.SessionManager(
        cluster_set.url,
        store_options={"key_prefix": prefix},
        write=sk.EndOfRequest(),
        housekeeping=False,
        clock=sk.FakeClock(),
    )
    clients = [redis.Redis(port=n.port) for n in cluster_set.masters()]
    try:
        with m.request(app="shop") as s:
            s["n"] = 0
        before = [command_calls(c) for c in clients]
        for i in range(20):
            with m.request(app="shop", session_id=s.id) as s:
                s["n"] = i + 1
        after = [command_calls(c) for c in clients]
    finally:
        m.close(deadline_s=0)
    sent: dict[str, int] = {}
    for b, a in zip(before, after, strict=True):
        for k, v in a.items():
            # REPLCONF: a replica's acknowledgement, once a second, not a command of ours.
            if v != b.get(k, 0) and k not in (
                "info",
                "cluster|slots",
                "cluster|shards",
                "replconf",
            ):
                sent[k] = sent.get(k, 0) + v - b.get(k, 0)
    assert sent.pop("evalsha") == 20, sent
    assert sum(sent.values()) <= 9 * 20, sent  # the script's own commands, its TIME included


# -- WAIT -----------------------------------------------------------------------------------------


def stop_replica(d: SentinelSet) -> int:
    pid = d.replica.proc.pid if d.replica.proc else 0
    os.kill(pid, signal.SIGSTOP)
    return pid


@pytest.mark.parametrize("through", ["sentinel", "plain"])
def test_an_invalidation_waits_for_the_replica(
    sentinel_set: SentinelSet, caplog: pytest.LogCaptureFixture, through: str
) -> None:
    """Through the sentinels (replicated by default), or to the master by a plain URL with
    ``replicated=True``."""
    if through == "sentinel":
        store = store_on(sentinel_set, wait_timeout_s=0.3)
    else:
        plain = f"redis://127.0.0.1:{sentinel_set.master_port()}/0"
        assert RedisStore(plain).tombstone_replicas == 0
        store = RedisStore(
            plain, key_prefix=services.unique_name("skha"), wait_timeout_s=0.3, replicated=True
        )
    replica = redis.Redis(port=sentinel_set.replica.port)
    store.save_many([req(tok(1), 0, {"a": b"1"})])
    store.delete("shop", tok(1), tombstone_until=T0 + 60)
    # Returned after WAIT: the replica has the tombstone (a failover to it keeps it).
    assert replica.exists(store._session_keys("shop", tok(1))[2]) == 1
    assert store.replica_wait_misses == 0
    pid = stop_replica(sentinel_set)
    try:
        with caplog.at_level(logging.WARNING, "sessionkeeper.store.redis"):
            store.delete("shop", tok(2), tombstone_until=T0 + 60)  # done, but not replicated
        assert store.replica_wait_misses == 1
        assert "invalidation reached 0 of 1 replicas" in caplog.text
    finally:
        os.kill(pid, signal.SIGCONT)
    store.close()


def test_a_durable_write_that_reaches_no_replica_is_not_acknowledged(
    sentinel_set: SentinelSet,
) -> None:
    store = store_on(sentinel_set, wait_replicas=1, wait_timeout_s=0.3)
    replica = redis.Redis(port=sentinel_set.replica.port)
    [res] = store.save_many([req(tok(1), 0, {"a": b"1"})])
    assert res.version == 1
    assert replica.hget(store._session_keys("shop", tok(1))[0], "a") == b"1"
    pid = stop_replica(sentinel_set)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="not durable"):
            store.save_many([req(tok(1), 1, {"a": b"2"})])
        assert time.monotonic() - started < 5  # the WAIT's bound, not a hang
        assert store.replica_wait_misses == 1
    finally:
        os.kill(pid, signal.SIGCONT)
    # Written on the master all the same: the retry meets it as its own conflict and merges.
    [res] = store.save_many([req(tok(1), 1, {"a": b"2"})])
    assert res.version == 3 and store.replica_wait_misses == 1
    store.close()
