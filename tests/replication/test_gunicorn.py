"""Three real gunicorn nodes, pure memory-to-memory (each ``memory://``, no database), with
``EndOfRequest`` and ``ack="sync"``, on a private nats-server: a node SIGKILLed under load
loses no acknowledged update.

The clients route like the balancers in ``deploy/``: to the owner the id names, falling back
to the next node it names, then to any live node. An update is acknowledged when its request
answered 200; at the end every client reads its cart back and each acknowledged sequence number
must be in it. The figures are printed (``-s``) and kept in the assertion messages."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from sessionkeeper import ids
from sessionkeeper.demo.app import seqs_of
from sessionkeeper.demo.cluster import Cluster, Node
from tests.replication.conftest import NatsServer, wait_until

pytestmark = pytest.mark.slow

CLIENTS = 12


@dataclass
class Client:
    name: str
    cluster: Cluster
    sid: str | None = None
    acked: set[int] = field(default_factory=set)
    requests: int = 0
    failed: int = 0

    def route(self) -> list[Node]:
        parsed = ids.parse_route(self.sid)
        named = [
            self.cluster.by_name[n]
            for n in (parsed[1] if parsed else ())
            if n in self.cluster.by_name
        ]
        return [*named, *(n for n in self.cluster.nodes if n not in named)]

    def send(self, method: str, path: str) -> httpx.Response | None:
        """One request, to the first node of the route that accepts a connection."""
        self.requests += 1
        headers = {"Cookie": f"sessionid={self.sid}"} if self.sid else {}
        for node in self.route():
            try:
                r = httpx.request(
                    method, f"http://127.0.0.1:{node.port}{path}", headers=headers, timeout=10
                )
            except httpx.TransportError:
                continue  # the balancer's fallback: the next node
            if r.status_code == 200:
                self.sid = r.cookies.get("sessionid", self.sid)
                return r
            self.failed += 1
            return None
        self.failed += 1
        return None


@pytest.fixture
def cluster(nats: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    monkeypatch.setenv("SESSIONKEEPER_REPLICATION", nats.url)
    with Cluster(3, "memory://", "end-of-request", tmp_path) as c:
        c.start()
        yield c


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_node_stopped_under_load_loses_no_acknowledged_update(cluster: Cluster, how: str) -> None:
    """SIGKILL: the backups take over. SIGTERM: gunicorn's ``worker_exit`` closes the manager,
    which hands its sessions to their backups."""
    clients = [Client(f"c{i}", cluster) for i in range(CLIENTS)]
    for c in clients:
        assert c.send("POST", f"/login?user={c.name}") is not None, c
    seq_done: dict[str, int] = {}

    def shop(c: Client) -> None:
        for seq in range(1, 41):
            if c.send("POST", f"/cart/add?item=fig&seq={seq}") is not None:
                c.acked.add(seq)
            seq_done[c.name] = seq

    threads = [threading.Thread(target=shop, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    assert wait_until(lambda: sum(seq_done.values()) >= CLIENTS * 15, timeout_s=60)
    victim = cluster.nodes[0]
    if how == "SIGKILL":
        victim.kill()
    else:
        victim.terminate()
        assert victim.wait_stopped(timeout_s=30)
    for t in threads:
        t.join(120)
    lost: dict[str, set[int]] = {}
    for c in clients:
        r = c.send("GET", "/cart")
        assert r is not None, (c, [n.log_tail() for n in cluster.live()])
        missing = c.acked - seqs_of(r.json())
        if missing:
            lost[c.name] = missing
    requests = sum(c.requests for c in clients)
    acked = sum(len(c.acked) for c in clients)
    figures = f"requests={requests} acknowledged={acked} lost={sum(map(len, lost.values()))}"
    print(f"\n{how} of {victim.name} under load: {figures}")
    assert not lost, (figures, lost)
    counter = "replication_takeovers" if how == "SIGKILL" else "replication_handoffs_received"
    assert sum(n.stats().get(counter, 0) for n in cluster.live()) > 0
    assert acked > CLIENTS * 15
