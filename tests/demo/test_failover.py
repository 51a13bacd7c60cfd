"""Two real gunicorn nodes on one SQLite store: a session outlives the process that served it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sessionkeeper.demo.app import seqs_of
from sessionkeeper.demo.cluster import Cluster, Node
from sessionkeeper.stores.sql import SqlStore

pytestmark = pytest.mark.slow

Start = Callable[[str], tuple[Node, Node]]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    SqlStore(url).init_schema()
    clusters: list[Cluster] = []

    def start_cluster(write: str) -> tuple[Node, Node]:
        cluster = Cluster(2, url, write, tmp_path)
        clusters.append(cluster)
        cluster.start()
        a, b = cluster.nodes
        return a, b

    yield start_cluster
    for cluster in clusters:
        cluster.close()


def _shop(node: Node, seqs: range) -> str:
    """Log in on ``node`` and add ``seqs`` to the cart; returns the session id."""
    with httpx.Client(base_url=f"http://127.0.0.1:{node.port}", timeout=5) as client:
        r = client.post("/login?user=ann")
        sid = r.cookies["sessionid"]
        assert sid.endswith(f".{node.name}")
        for seq in seqs:
            r = client.post(f"/cart/add?item=fig&seq={seq}", headers={"Cookie": f"sessionid={sid}"})
            assert r.status_code == 200 and r.json()["node"] == node.name
    return sid


def _cart(node: Node, sid: str) -> tuple[dict[str, object], str]:
    r = httpx.get(
        f"http://127.0.0.1:{node.port}/cart", headers={"Cookie": f"sessionid={sid}"}, timeout=5
    )
    assert r.status_code == 200
    return r.json(), r.cookies.get("sessionid", sid)


def test_sigkill_loses_nothing_under_end_of_request(start: Start) -> None:
    a, b = start("end-of-request")
    sid = _shop(a, range(1, 11))
    a.kill()
    body, new_sid = _cart(b, sid)
    assert body["node"] == b.name and body["user"] == "ann"
    assert seqs_of(body) == set(range(1, 11))
    assert new_sid.endswith(f".{b.name}")  # b took the session over


def test_sigterm_flushes_under_time_based(start: Start) -> None:
    a, b = start("time-based:300")  # nothing due before the stop: only the shutdown flush writes
    sid = _shop(a, range(1, 11))
    a.terminate()
    assert a.wait_stopped(timeout_s=20)
    body, _ = _cart(b, sid)
    assert body["user"] == "ann" and seqs_of(body) == set(range(1, 11))


def test_sigkill_under_time_based_loses_the_unwritten_changes(start: Start) -> None:
    """The control for the test above: without the graceful stop, the crash window shows."""
    a, b = start("time-based:300")
    sid = _shop(a, range(1, 11))
    a.kill()
    body, _ = _cart(b, sid)
    assert body["user"] == "ann"  # written when the session was created
    assert seqs_of(body) == set()
