"""What one changed request costs Redis, from the server's own counters (``INFO commandstats``,
which counts the commands a script runs besides the EVALSHA that ran it), on a private
redis-server so that no other client is counted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import sessionkeeper as sk
from tests.servers.instances import Instance, own_instance

redis = pytest.importorskip("redis")


@pytest.fixture
def private_redis() -> Iterator[Instance]:
    instance = own_instance("redis")
    try:
        yield instance
    finally:
        instance.close()


def command_calls(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def test_a_changed_request_is_one_script_call(private_redis: Instance) -> None:
    """Was 15 commands per request (1 EVALSHA running 14): TYPE x2, HGET x2, HSET x4, HDEL
    (an owner that was never set), PEXPIRE x2, EXISTS, ZADD, and SADD of the app every time."""
    client = redis.Redis.from_url(private_redis.url)
    m = sk.SessionManager(
        private_redis.url, write=sk.EndOfRequest(), housekeeping=False, clock=sk.FakeClock()
    )
    try:
        with m.request(app="shop") as s:
            s["n"] = 0
        before = command_calls(client)
        requests = 50
        for i in range(requests):
            with m.request(app="shop", session_id=s.id) as s:
                s["n"] = i + 1
        after = command_calls(client)
    finally:
        m.close(deadline_s=0)
        client.close()
    sent = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    sent.pop("info", None)
    assert sent.pop("evalsha") == requests, sent
    per_request = sum(sent.values()) / requests
    # Inside the script: TIME (the deadline fence), EXISTS, HMGET, HSET x3, PEXPIRE x2, ZADD.
    assert per_request <= 9, sent


def test_a_changed_request_of_an_owner_is_one_script_call(private_redis: Instance) -> None:
    """The owner index is kept by the save script itself: no second call per write."""
    client = redis.Redis.from_url(private_redis.url)
    m = sk.SessionManager(
        private_redis.url, write=sk.EndOfRequest(), housekeeping=False, clock=sk.FakeClock()
    )
    try:
        with m.request(app="shop") as s:
            s["n"] = 0
            s.owner = "alice"
        before = command_calls(client)
        for i in range(20):
            with m.request(app="shop", session_id=s.id) as s:
                s["n"] = i + 1
        after = command_calls(client)
        assert [x.owner for x in m.sessions_of("shop", "alice")] == ["alice"]
    finally:
        m.close(deadline_s=0)
        client.close()
    sent = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    sent.pop("info", None)
    assert sent.pop("evalsha") == 20, sent
    # The 9 above, SADD and PEXPIRE GT of the owner's set (was SADD, PTTL and PEXPIRE: 12); and
    # PTTL where PEXPIRE GT changed nothing (two writes in one millisecond, or a set with no TTL
    # yet), at most once per write.
    assert sent.pop("pttl", 0) <= 20, sent
    assert sum(sent.values()) <= 11 * 20, sent
