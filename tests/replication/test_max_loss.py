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
