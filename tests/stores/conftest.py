"""Fixtures of the Redis store tests (``test_redis*.py``); ``redis_url`` is the shared fixture of
tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests import services


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    import redis

    p = services.unique_name("skredis")
    yield p
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{p}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def raw(redis_url: str) -> Iterator[Any]:
    """A plain client of the test's Redis server, for what the store's API does not show."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
