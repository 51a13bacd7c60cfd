"""The core's properties of test_core_on_servers.py on a Redis Sentinel set and a Redis Cluster
(tests/servers/redis_ha.py): the same tests, with ``target`` naming these deployments."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .conftest import Target, target_options
from .redis_ha import ClusterSet, Deployment, SentinelSet, start
from .test_core_on_servers import (
    test_destroyed_fires_exactly_once_across_two_nodes,
    test_destroyed_fires_once_per_session_of_two_alternating_nodes,
    test_per_app_timeouts_and_the_sweep_grace,
    test_session_kept_alive_on_another_node_is_not_swept,
    test_two_nodes_writing_different_keys_keep_both,
)

__all__ = [
    "test_destroyed_fires_exactly_once_across_two_nodes",
    "test_destroyed_fires_once_per_session_of_two_alternating_nodes",
    "test_per_app_timeouts_and_the_sweep_grace",
    "test_session_kept_alive_on_another_node_is_not_swept",
    "test_two_nodes_writing_different_keys_keep_both",
]

pytestmark = pytest.mark.slow  # starts its own Redis servers

KINDS: dict[str, type[Deployment]] = {"sentinel": SentinelSet, "cluster": ClusterSet}


class HaTarget(Target):
    def cleanup(self) -> None:
        # The deployment is this module's own and goes with it; only the stores are closed.
        for store in self.opened:
            store.close()


@pytest.fixture(scope="module", params=list(KINDS))
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    d = start(KINDS[request.param])
    yield d
    d.close()


@pytest.fixture
def target(deployment: Deployment) -> Iterator[Target]:
    t = HaTarget("redis", deployment.url, target_options("redis"))
    yield t
    t.cleanup()
