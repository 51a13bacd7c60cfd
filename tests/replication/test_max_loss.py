"""What a configuration with replication may lose on one node's crash: the bound the demo
report and the chaos verdict judge by (``Replication.max_loss``). Pure: no server."""

from __future__ import annotations

import math

import pytest

import sessionkeeper as sk
from sessionkeeper.policies import parse_policy


@pytest.mark.parametrize("write", ["end-of-request", "time-based:60", "manual"])
@pytest.mark.parametrize("durable", [True, False])
def test_sync_backups_lose_nothing_whatever_the_policy_and_store(write: str, durable: bool) -> None:
    loss = sk.Replication(replicas=1, ack="sync").max_loss(
        parse_policy(write).max_loss(), durable_store=durable
    )
    assert loss.nothing


def test_async_backups_lose_at_most_the_window_in_flight() -> None:
    r = sk.Replication(replicas=1, ack="async", async_window=50)
    alone = r.max_loss(parse_policy("end-of-request").max_loss(), durable_store=False)
    assert alone.requests == 50 and math.isinf(alone.seconds)
    # In front of a store that loses nothing, the store's bound holds as well.
    assert r.max_loss(parse_policy("end-of-request").max_loss(), durable_store=True).nothing
    timed = r.max_loss(parse_policy("time-based:60").max_loss(), durable_store=True)
    assert timed.seconds == 62 and timed.requests == 50


def test_the_channel_alone_keeps_the_policys_bound_and_memory_loses_everything() -> None:
    r = sk.Replication(replicas=0)
    timed = parse_policy("time-based:10").max_loss()
    assert r.max_loss(timed, durable_store=True) == timed
    eor = parse_policy("end-of-request").max_loss()
    assert r.max_loss(eor, durable_store=True).nothing
    alone = r.max_loss(eor, durable_store=False)
    assert math.isinf(alone.seconds) and math.isinf(alone.requests)


def test_the_crash_window_is_the_stores_or_the_ack_lag_whichever_is_shorter() -> None:
    """``stats()["crash_window_s"]`` asks this rule: an acknowledged change is lost at a crash
    only if neither the store nor a backup has it."""
    sync, asyn = sk.Replication(replicas=1, ack="sync"), sk.Replication(replicas=1, ack="async")
    assert sync.crash_window_s(62.0, durable_store=True, ack_lag_s=0.0) == 0
    assert asyn.crash_window_s(62.0, durable_store=True, ack_lag_s=0.25) == 0.25
    assert asyn.crash_window_s(0.0, durable_store=True, ack_lag_s=0.25) == 0  # EndOfRequest
    assert asyn.crash_window_s(0.0, durable_store=False, ack_lag_s=0.25) == 0.25  # memory://
    # Acknowledged while no backup could take it (a store in front, NATS away): the store's.
    assert sync.crash_window_s(62.0, durable_store=True, ack_lag_s=90.0) == 62
    channel = sk.Replication(replicas=0)
    assert channel.crash_window_s(62.0, durable_store=True, ack_lag_s=0.0) == 62
    assert math.isinf(channel.crash_window_s(0.0, durable_store=False, ack_lag_s=0.0))
