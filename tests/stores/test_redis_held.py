"""Connections kept out of redis-py's pool between one-command calls (stores/redis_held.py): no
pool round per call, and each thing the pool did still done: a broken connection replaced, an
idle one checked before use, nothing of the parent's used after fork, everything handed back on
close. Real Redis; the idle rule on a fake clock."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

redis = pytest.importorskip("redis")

from sessionkeeper.stores import RetryPolicy, SaveStatus  # noqa: E402
from sessionkeeper.stores.redis import RedisStore  # noqa: E402
from sessionkeeper.stores.redis_held import IDLE_S, HeldConnections  # noqa: E402

from .contract import req, tok  # noqa: E402


class CountingPool(redis.ConnectionPool):  # type: ignore[misc,name-defined]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gets = 0

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self.gets += 1
        return super().get_connection(*args, **kwargs)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client_of(redis_url: str, **pool_kwargs: Any) -> Any:
    kwargs = redis.Redis.from_url(redis_url).get_connection_kwargs()
    keep = ("host", "port", "db", "username", "password")
    pool = CountingPool(**{k: v for k, v in kwargs.items() if k in keep}, **pool_kwargs)
    return redis.Redis(connection_pool=pool)


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    c = client_of(redis_url)
    yield c
    c.close()


def client_id(held: HeldConnections) -> int:
    return int(held.execute("CLIENT", "ID"))


def test_steady_calls_take_nothing_from_the_pool(client: Any) -> None:
    held = HeldConnections(client)
    first = client_id(held)
    gets = client.connection_pool.gets
    assert [client_id(held) for _ in range(50)] == [first] * 50
    assert client.connection_pool.gets == gets == 1
    assert held.kept() == 1


def test_an_error_reply_keeps_the_connection(client: Any) -> None:
    held = HeldConnections(client)
    first = client_id(held)
    with pytest.raises(redis.ResponseError):
        held.execute("EVALSHA", b"0" * 40, b"0")
    assert client_id(held) == first


def test_a_connection_killed_under_it_fails_one_call_and_the_next_connects_afresh(
    client: Any, redis_url: str
) -> None:
    held = HeldConnections(client)
    first = client_id(held)
    redis.Redis.from_url(redis_url).client_kill_filter(_id=first)
    with pytest.raises(redis.ConnectionError):
        client_id(held)
    assert held.kept() == 0
    assert client_id(held) != first


def test_a_store_write_on_a_killed_connection_is_retried_and_lands(
    redis_url: str, prefix: str
) -> None:
    client = client_of(redis_url)
    store = RedisStore(client, key_prefix=prefix, retry=RetryPolicy(attempts=2, backoff_s=0))
    try:
        assert store.save_many([req(tok(0), 0, {"n": b"1"})])[0].status is SaveStatus.SAVED
        held = store._runner.held
        assert held is not None and held.kept() == 1
        redis.Redis.from_url(redis_url).client_kill_filter(_id=client_id(held))
        [res] = store.save_many([req(tok(0), 1, {"n": b"2"})])
        assert res.status is SaveStatus.SAVED
        stored = store.load("shop", tok(0))
        assert stored is not None and stored.attributes["n"] == b"2"
    finally:
        store.close()
        client.close()


def test_an_idle_connection_is_checked_by_the_pool_before_use(client: Any, redis_url: str) -> None:
    clock = Clock()
    held = HeldConnections(client, clock=clock)
    first = client_id(held)
    clock.now += IDLE_S / 2
    assert client_id(held) == first and client.connection_pool.gets == 1  # not idle yet
    redis.Redis.from_url(redis_url).client_kill_filter(_id=first)  # closed while idle
    clock.now += IDLE_S + 1
    assert client_id(held) != first  # no error: replaced before the call, not after
    assert client.connection_pool.gets == 2


def test_a_forked_child_never_uses_the_parents_connection(client: Any) -> None:
    held = HeldConnections(client)
    parent = client_id(held)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its connection's id, then leave without cleanup
        try:
            os.write(write, str(client_id(held)).encode())
        finally:
            os._exit(0)
    os.close(write)
    child = int(os.read(read, 64))
    os.close(read)
    assert os.waitpid(pid, 0)[1] == 0
    assert child != parent
    assert client_id(held) == parent  # the child closed nothing of ours


def test_close_hands_the_kept_connections_back_to_a_clients_pool(
    redis_url: str, prefix: str
) -> None:
    client = client_of(redis_url, max_connections=1)
    store = RedisStore(client, key_prefix=prefix)
    store.save_many([req(tok(0), 0, {})])
    store.close()
    assert client.ping()  # the pool's one connection is back (else MaxConnectionsError)
    client.close()


def test_threads_share_the_free_list_without_sharing_a_connection(client: Any) -> None:
    held = HeldConnections(client)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            for j in range(200):
                key = f"skheld:{os.getpid()}:{i}"
                held.execute("SET", key, str(j))
                assert held.execute("GET", key) == str(j).encode()
            held.execute("DEL", key)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert 1 <= held.kept() <= 8 and client.connection_pool.gets == held.kept()


def test_a_client_with_its_own_connection_is_used_as_it_is(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, single_connection_client=True)
    held = HeldConnections(client)
    assert not held.enabled
    assert held.execute("PING") is True
    assert held.kept() == 0
    client.close()
