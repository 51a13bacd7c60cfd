"""RedisStore: the store contract on a real Redis, plus what is particular to Redis (TTLs, expiry by
Redis itself, bad data, outages, pipelining, URLs)."""

from __future__ import annotations

import dataclasses
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

redis = pytest.importorskip("redis")

from sessionkeeper.demo.cluster import free_port  # noqa: E402
from sessionkeeper.errors import (  # noqa: E402
    ConfigurationError,
    CorruptSessionData,
    StoreError,
    StoreUnavailable,
)
from sessionkeeper.stores import RetryPolicy, SaveStatus, Touch, open_store  # noqa: E402
from sessionkeeper.stores.redis import RedisStore, bucket_of  # noqa: E402

from .contract import T0, OwnerContract, StoreContract, req, tok  # noqa: E402
from .damage import damage_redis_session  # noqa: E402

GRACE_S = 600.0


@pytest.fixture
def store(redis_url: str, prefix: str) -> Iterator[RedisStore]:
    s = RedisStore(redis_url, key_prefix=prefix, grace_s=GRACE_S)
    yield s
    s.close()


class TestRedisStore(StoreContract, OwnerContract):
    pass


# -- TTLs ---------------------------------------------------------------------------------------


def ttl_s(raw: Any, key: str) -> float:
    return float(raw.pttl(key)) / 1000


def test_ttl_is_timeout_plus_grace_and_refreshed(store: RedisStore, raw: Any) -> None:
    store.save_many([req(tok(1), 0, {"a": b"1"}, timeout_s=100)])
    a, m, _ = store._session_keys("shop", tok(1))
    assert 100 + GRACE_S - 5 < ttl_s(raw, m) <= 100 + GRACE_S
    assert 100 + GRACE_S - 5 < ttl_s(raw, a) <= 100 + GRACE_S
    raw.pexpire(m, 10_000)
    raw.pexpire(a, 10_000)
    store.touch_many([Touch("shop", tok(1), T0 + 1)])
    assert ttl_s(raw, m) > 100 + GRACE_S - 5 and ttl_s(raw, a) > 100 + GRACE_S - 5
    raw.pexpire(m, 10_000)
    store.save_many([req(tok(1), 1, {"b": b"2"}, timeout_s=200)])
    assert 200 + GRACE_S - 5 < ttl_s(raw, m) <= 200 + GRACE_S


def test_the_ttl_ends_with_the_absolute_deadline_plus_grace(store: RedisStore, raw: Any) -> None:
    check_deadline_ttl(store, raw)


def check_deadline_ttl(store: RedisStore, raw: Any) -> None:
    """A session whose deadline comes before its idle expiry: its keys (and its owner's set) live
    min(idle, deadline) + grace, on a save and on a touch, not the whole idle timeout (``raw``: a
    client of the deployment, ``store.grace_s`` = 600)."""
    r = dataclasses.replace(
        req(tok(1), 0, {"a": b"1"}, timeout_s=5000, owner="ann"), absolute_expires_at=T0 + 100
    )
    store.save_many([r])
    a, m, _ = store._session_keys("shop", tok(1))
    own = store.owner_key("shop", "ann", bucket_of(tok(1)))
    for key in (a, m, own):
        assert 100 + GRACE_S - 5 < ttl_s(raw, key) <= 100 + GRACE_S
    store.touch_many([Touch("shop", tok(1), T0 + 60)])  # 40 s before the deadline
    for key in (a, m):
        assert 40 + GRACE_S - 5 < ttl_s(raw, key) <= 40 + GRACE_S
    # Without a deadline the idle timeout rules, as before.
    store.save_many([req(tok(2), 0, {"a": b"1"}, timeout_s=100)])
    store.touch_many([Touch("shop", tok(2), T0 + 60)])
    assert 100 + GRACE_S - 5 < ttl_s(raw, store._session_keys("shop", tok(2))[1]) <= 100 + GRACE_S


@pytest.mark.parametrize(("store_grace_s", "interval_s"), [(0.0, 600.0), (None, 7200.0)])
def test_the_managers_sweep_grace_reaches_the_ttls(
    redis_url: str, prefix: str, raw: Any, store_grace_s: float | None, interval_s: float
) -> None:
    """Redis must not end a session that the sweep would still keep: its TTLs carry at least the
    manager's grace (here the TimeBased interval, longer than the store's own ``grace_s``)."""
    import sessionkeeper as sk

    options: dict[str, Any] = {"key_prefix": prefix}
    if store_grace_s is not None:
        options["grace_s"] = store_grace_s
    m = sk.SessionManager(
        redis_url,
        store_options=options,
        write=sk.TimeBased(interval_s),
        timeout_s=100,
        housekeeping=False,
    )
    try:
        assert m.sweep_grace_s >= interval_s
        with m.request(app="shop") as s:
            s["k"] = 1
        a, meta, _ = m.store._session_keys("shop", s.token)  # type: ignore[attr-defined]
        want = 100 + m.sweep_grace_s
        assert want - 5 < ttl_s(raw, meta) <= want and want - 5 < ttl_s(raw, a) <= want
    finally:
        m.close(deadline_s=0)


def test_tombstone_is_a_key_with_ttl(store: RedisStore, raw: Any) -> None:
    store.save_many([req(tok(1), 0, {"a": b"1"})])
    store.delete("shop", tok(1), tombstone_until=time.time() + 300)
    a, m, x = store._session_keys("shop", tok(1))
    assert raw.exists(a, m) == 0
    assert 300 + GRACE_S - 5 < ttl_s(raw, x) <= 300 + GRACE_S
    # A caller whose clock is behind the server's (or a fake clock) still gets at least the grace.
    store.delete("shop", tok(2), tombstone_until=T0)
    assert GRACE_S - 5 < ttl_s(raw, store._session_keys("shop", tok(2))[2]) <= GRACE_S


def expire_now(raw: Any, keys: list[str]) -> None:
    """Let Redis's own TTL end these keys, as it would after timeout + grace."""
    for k in keys:
        raw.pexpire(k, 1)
    deadline = time.monotonic() + 5
    while raw.exists(*keys) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert raw.exists(*keys) == 0


def test_session_expired_by_redis_is_still_swept_once(store: RedisStore, raw: Any) -> None:
    store.save_many(
        [
            req(tok(1), 0, {"a": b"1"}, timeout_s=10, owner="alice"),
            req(tok(2), 0, {}, timeout_s=10_000),
        ]
    )
    expire_now(raw, store._session_keys("shop", tok(1))[:2])
    assert store.load("shop", tok(1)) is None
    assert store.counts_by_app(T0 + 100)["shop"].expired == 1
    [gone] = store.delete_expired(T0 + 100, limit=10)
    assert (gone.app, gone.token, gone.owner) == ("shop", tok(1), "alice")
    assert gone.last_access_at == T0 and gone.timeout_s == 10
    assert store.delete_expired(T0 + 100, limit=10) == []
    other = RedisStore(raw, key_prefix=store.key_prefix)
    assert other.delete_expired(T0 + 100, limit=10) == []


def test_stale_index_entry_of_a_live_session_is_reindexed(store: RedisStore, raw: Any) -> None:
    """A too early index entry (the layout of an older version could leave one): the sweep must
    check the session itself, keep it, and index it again."""
    store.save_many([req(tok(1), 0, {"a": b"1"}, timeout_s=1000)])
    e, _, _ = store._index_keys("shop", tok(1))
    raw.zadd(e, {tok(1): T0 + 1})
    raw.hset(store._session_keys("shop", tok(1))[1], "l", repr(T0 + 500))
    assert store.delete_expired(T0 + 100, limit=10) == []
    assert store.load("shop", tok(1)) is not None
    assert raw.zscore(e, tok(1)) == T0 + 1500  # from the session, not the stale entry


def test_precise_times_round_trip(store: RedisStore) -> None:
    la = 1_700_000_123.123_456_7
    store.save_many([req(tok(1), 0, {}, last_access_at=la, timeout_s=0.1)])
    s = store.load("shop", tok(1))
    assert s is not None and s.last_access_at == la and s.timeout_s == 0.1
    assert store.delete_expired(la + 0.1, limit=1) == []
    [gone] = store.delete_expired(la + 0.100_001, limit=1)
    assert gone.last_access_at == la


# -- bad data -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    ["version", "missing_field", "meta_wrong_type", "attrs_wrong_type", "bad_name"],
)
def test_bad_data_is_reported_typed(store: RedisStore, raw: Any, damage: str) -> None:
    store.save_many([req(tok(1), 0, {"a": b"1"})])
    a, m, _ = store._session_keys("shop", tok(1))
    damage_redis_session(store, "shop", tok(1), damage)
    with pytest.raises(CorruptSessionData):
        store.load("shop", tok(1))
    if damage in ("missing_field", "bad_name"):
        return  # a partial write does not read what is damaged; the next load reports it again
    with pytest.raises((CorruptSessionData, StoreError)) as info:
        store.save_many([req(tok(1), 1, {"b": b"2"})])
    assert "SKCORRUPT" in str(info.value) or "unreadable" in str(info.value)
    if damage == "version":  # a failed script wrote nothing
        assert raw.hget(m, "v") == b"garbage" and raw.hget(a, "b") is None


# -- pipelining ---------------------------------------------------------------------------------


class CountingConnection(redis.Connection):  # type: ignore[misc,name-defined]
    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        super().send_packed_command(command, check_health)


def test_batch_of_1000_is_one_round_trip(redis_url: str, prefix: str) -> None:
    kwargs = redis.Redis.from_url(redis_url).get_connection_kwargs()
    pool = redis.ConnectionPool(
        connection_class=CountingConnection,
        **{k: v for k, v in kwargs.items() if k in ("host", "port", "db", "username", "password")},
    )
    client = redis.Redis(connection_pool=pool)
    store = RedisStore(client, key_prefix=prefix)
    # connects (a pipeline's connection: one call alone goes on a connection kept out of the
    # pool), loads the script
    store.save_many([req(tok(0), 0, {}), req(tok(1001), 0, {})])
    CountingConnection.sends = 0
    results = store.save_many([req(tok(i), 0, {"k": b"v" * 10}) for i in range(1, 1001)])
    assert CountingConnection.sends == 1
    assert all(r.status is SaveStatus.SAVED for r in results)
    CountingConnection.sends = 0
    store.touch_many([Touch("shop", tok(i), T0 + 5) for i in range(1, 1001)])
    assert CountingConnection.sends == 1
    client.close()


def test_script_cache_loss_is_survived(store: RedisStore, raw: Any) -> None:
    store.save_many([req(tok(1), 0, {})])
    raw.script_flush()
    results = store.save_many([req(tok(i), 0, {}) for i in range(2, 12)])
    assert all(r.status is SaveStatus.SAVED for r in results)
    raw.script_flush()
    assert store.load("shop", tok(5)) is not None
    raw.script_flush()
    [one] = store.save_many([req(tok(5), 1, {"k": b"v"})])  # one call: no pipeline
    assert one.status is SaveStatus.SAVED and one.version == 2


# -- URLs and configuration ---------------------------------------------------------------------


def test_url_parsing() -> None:
    s = RedisStore("rediss://bob:s3cr%40t@cache.example:6380/2", timeout_s=1.5)
    assert isinstance(s.client, redis.Redis)
    kw = s.client.get_connection_kwargs()
    assert (kw["host"], kw["port"], kw["db"]) == ("cache.example", 6380, 2)
    assert (kw["username"], kw["password"]) == ("bob", "s3cr@t")
    assert kw["socket_timeout"] == 1.5 and kw["socket_connect_timeout"] == 1.5
    assert issubclass(s.client.connection_pool.connection_class, redis.SSLConnection)
    assert "s3cr" not in s.describe() and "bob@cache.example:6380/2" in s.describe()
    u = RedisStore("unix:///run/redis.sock?db=3")
    assert isinstance(u.client, redis.Redis)
    kw = u.client.get_connection_kwargs()
    assert kw["path"] == "/run/redis.sock" and kw["db"] == 3
    assert issubclass(u.client.connection_pool.connection_class, redis.UnixDomainSocketConnection)
    assert isinstance(open_store("redis://localhost:6379/0"), RedisStore)


def test_bad_configuration(redis_url: str) -> None:
    with pytest.raises(ConfigurationError):
        RedisStore(redis_url, key_prefix="sk{x}:")
    with pytest.raises(ConfigurationError):
        RedisStore(redis.Redis.from_url(redis_url, decode_responses=True))
    with pytest.raises(ConfigurationError):
        RedisStore(42)  # type: ignore[arg-type]


def test_keys_of_one_session_share_a_slot(store: RedisStore) -> None:
    from redis.crc import key_slot

    for app in ("shop", "we:ird{app}", "ключ"):
        keys = store._session_keys(app, tok(1))
        assert len({key_slot(k.encode()) for k in keys}) == 1
        index = store._index_keys(app, tok(1))
        assert len({key_slot(k.encode()) for k in keys + index}) == 1
    assert store._session_keys("a:b", "c") != store._session_keys("a", "b:c")


# -- outages ------------------------------------------------------------------------------------


def test_unreachable_port_is_unavailable_quickly() -> None:
    s = RedisStore(
        f"redis://127.0.0.1:{free_port()}/0",
        timeout_s=0.5,
        retry=RetryPolicy(attempts=2, backoff_s=0),
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        s.load("shop", tok(1))
    with pytest.raises(StoreUnavailable):
        s.save_many([req(tok(1))])
    assert time.monotonic() - started < 3
    assert s.stats.available is False and s.stats.retries == 2


class RedisServer:
    """A redis-server of our own, so the test can kill and restart it."""

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port, self.dir = port, data_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server binary not found")
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.mark.slow
def test_outage_and_recovery_without_recreating_the_store(own_server: RedisServer) -> None:
    store = RedisStore(
        f"redis://127.0.0.1:{own_server.port}/0",
        timeout_s=0.5,
        retry=RetryPolicy(attempts=2, backoff_s=0.01),
    )
    store.save_many([req(tok(i), 0, {"a": str(i).encode()}) for i in range(10)])
    own_server.kill()
    for call in (
        lambda: store.load("shop", tok(1)),
        lambda: store.save_many([req(tok(1), 1, {"a": b"x"})]),
        lambda: store.touch_many([Touch("shop", tok(1), T0 + 1)]),
        lambda: store.delete_expired(T0 + 10_000),
        lambda: store.counts_by_app(T0),
    ):
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            call()
        assert time.monotonic() - started < 3
    assert store.stats.available is False
    own_server.start()  # same port; the append-only file brings the sessions back
    s = store.load("shop", tok(1))
    assert s is not None and s.attributes["a"] == b"1"
    [res] = store.save_many([req(tok(1), 1, {"a": b"after"})])
    assert res.status is SaveStatus.SAVED and res.version == 2
    assert store.stats.available is True
    store.close()


def test_script_error_is_a_store_error_not_a_retry(store: RedisStore) -> None:
    store._load_s = store.client.register_script("return redis.call('NO_SUCH_COMMAND')")
    with pytest.raises(StoreError) as info:
        store.load("shop", tok(1))
    assert not isinstance(info.value, StoreUnavailable)
    assert store.stats.retries == 0


def test_thousands_of_attributes_in_one_write(store: RedisStore) -> None:
    """Changed and removed names go to HSET and HDEL in chunks: one ``unpack`` of them all would
    overflow Lua's stack."""
    many = {f"k{i}": b"v" for i in range(6000)}
    [res] = store.save_many([req(tok(1), 0, many)])
    assert res.status is SaveStatus.SAVED
    [res] = store.save_many([req(tok(1), 1, {"new": b"1"}, frozenset(list(many)[:5000]))])
    assert res.status is SaveStatus.SAVED
    s = store.load("shop", tok(1))
    assert s is not None and len(s.attributes) == 1001 and s.attributes["new"] == b"1"


def test_a_lost_apps_set_is_written_again_by_the_sweep(store: RedisStore, raw: Any) -> None:
    """The apps set is written once per process and app; a failover that lost it must not hide
    the app's sessions from the sweep and the counts of every other node for good."""
    store.save_many([req(tok(1), 0, {}, timeout_s=10)])
    raw.delete(store._apps_key)
    other = RedisStore(raw, key_prefix=store.key_prefix)
    assert other.counts_by_app(T0) == {}
    assert store.delete_expired(T0, limit=10) == []  # nothing expired yet; the set is back
    assert other.counts_by_app(T0)["shop"].live == 1
    [gone] = other.delete_expired(T0 + 11, limit=10)
    assert gone.token == tok(1)


def test_owner_set_expires_and_forgets_sessions_redis_dropped(store: RedisStore, raw: Any) -> None:
    store.save_many([req(tok(1), 0, {}, owner="alice"), req(tok(2), 0, {}, owner="alice")])
    key1, key2 = (store.owner_key("shop", "alice", bucket_of(tok(i))) for i in (1, 2))
    assert 0 < raw.pttl(key2) <= (1800 + GRACE_S) * 1000
    raw.delete(*store._session_keys("shop", tok(1))[:2])  # what Redis's own TTL does
    assert [s.token for s in store.sessions_of("shop", "alice")] == [tok(2)]
    assert raw.sismember(key2, tok(2)) and not raw.sismember(key1, tok(1))


def test_a_touch_keeps_the_owner_set_as_long_as_the_session(store: RedisStore, raw: Any) -> None:
    """A touch extends a session's Redis TTL; its owner's set must not end first, or logout
    everywhere would miss a live session. The set's TTL is lowered by hand to stand for the time
    that passed since the save (Redis's TTLs run on the server's clock, not the fake one)."""
    store.save_many([req(tok(1), 0, {}, owner="alice")])
    key = store.owner_key("shop", "alice", bucket_of(tok(1)))
    raw.sadd(key, tok(9))  # a stale member, so that the set outlives the SREM
    raw.srem(key, tok(1))  # a session the set does not name (written before the index)
    raw.pexpire(key, 5000)
    store.touch_many([Touch("shop", tok(1), T0 + 60)])
    assert raw.pexpiretime(key) >= raw.pexpiretime(store._session_keys("shop", tok(1))[1])
    assert [s.token for s in store.sessions_of("shop", "alice")] == [tok(1)]


def test_the_sweep_drops_from_the_owner_set_a_session_redis_expired(
    store: RedisStore, raw: Any
) -> None:
    """Redis dropped the metadata: the owner comes from the index's side entry."""
    store.save_many([req(tok(1), 0, {}, owner="al|ice", timeout_s=10.0)])
    raw.delete(*store._session_keys("shop", tok(1))[:2])  # what Redis's own TTL does
    [gone] = store.delete_expired(T0 + 100, limit=10)
    assert (gone.token, gone.owner) == (tok(1), "al|ice")
    assert not raw.exists(store.owner_key("shop", "al|ice", bucket_of(tok(1))))


def test_a_save_raises_the_owner_set_ttl_and_never_lowers_it(store: RedisStore, raw: Any) -> None:
    """``PEXPIRE GT`` raises a set's TTL; a set without one (GT reads it as endless) gets one
    after PTTL says so, and a set that outlives the session keeps its longer TTL."""
    store.save_many([req(tok(1), 0, {}, owner="alice")])
    key = store.owner_key("shop", "alice", bucket_of(tok(1)))
    m = store._session_keys("shop", tok(1))[1]
    raw.persist(key)
    store.save_many([req(tok(1), 1, {"a": b"1"}, owner="alice")])
    # Expiry instants, not remaining TTLs: two PTTL calls a millisecond apart read one instant
    # as two (CI saw 2400000 then 2399999 for keys the script gave the same expiry).
    assert 0 < raw.pexpiretime(m) <= raw.pexpiretime(key)
    assert raw.pttl(key) <= (1800 + GRACE_S) * 1000
    raw.pexpire(key, 5000)
    store.save_many([req(tok(1), 2, {"a": b"2"}, owner="alice")])
    assert raw.pexpiretime(key) >= raw.pexpiretime(m)
    assert raw.pttl(m) > 5000
    far = int(10 * (1800 + GRACE_S) * 1000)
    raw.pexpire(key, far)
    store.save_many([req(tok(1), 3, {"a": b"3"}, owner="alice")])
    assert raw.pttl(key) > far - 60_000
