"""Three real gunicorn nodes, pure memory-to-memory (each ``memory://``, no database), with
``EndOfRequest`` and ``ack="sync"``, on a private nats-server: a node SIGKILLed under load
loses no acknowledged update.

The clients route like the balancers in ``deploy/``: to the owner the id names, falling back
to the next node it names, then to any live node. An update is acknowledged when its request
answered 200; at the end every client reads its cart back and each acknowledged sequence number
must be in it. The figures are printed (``-s``) and kept in the assertion messages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from sessionkeeper import ids
from sessionkeeper.demo.app import seqs_of
from sessionkeeper.demo.cluster import Cluster, Node, free_port, get_json
from sessionkeeper.stores.sql import SqlStore
from tests.replication.conftest import NatsServer, wait_until

pytestmark = pytest.mark.slow

CLIENTS = 12
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Client:
    name: str
    cluster: Cluster
    sid: str | None = None
    acked: set[int] = field(default_factory=set)
    requests: int = 0
    failed: int = 0
    timeout_s: float = 10.0

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
                    method,
                    f"http://127.0.0.1:{node.port}{path}",
                    headers=headers,
                    timeout=self.timeout_s,
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


def test_a_paused_owner_is_fenced_and_brings_nothing_back(cluster: Cluster) -> None:
    """SIGSTOP the owner for 10 s while its client goes on (the balancer falls back after a
    timeout), then SIGCONT: the requests it had queued are refused (fenced), and its old copy
    is never served again, even under the old id."""
    client = Client("c", cluster, timeout_s=2.0)
    assert client.send("POST", "/login?user=c") is not None
    old_sid = client.sid
    route = ids.parse_route(old_sid)
    assert route is not None
    owner = cluster.by_name[route[1][0]]
    for seq in range(1, 11):
        assert client.send("POST", f"/cart/add?item=fig&seq={seq}") is not None
        client.acked.add(seq)
    old_sid = client.sid
    os.killpg(owner.proc.pid if owner.proc else 0, signal.SIGSTOP)
    try:
        stopped_at, seq = time.monotonic(), 10
        while time.monotonic() - stopped_at < 10:
            seq += 1
            if client.send("POST", f"/cart/add?item=fig&seq={seq}") is not None:
                client.acked.add(seq)
    finally:
        os.killpg(owner.proc.pid if owner.proc else 0, signal.SIGCONT)
    assert wait_until(lambda: owner.stats().get("replication_fenced", 0) >= 1, timeout_s=20)
    stale = Client("stale", cluster, sid=old_sid)
    r = stale.send("GET", "/cart")  # the old id, to the old owner: it must take the session back
    assert r is not None and r.json()["node"] == owner.name
    assert client.acked <= seqs_of(r.json())
    final = client.send("GET", "/cart")
    assert final is not None
    lost = client.acked - seqs_of(final.json())
    figures = (
        f"requests={client.requests} acknowledged={len(client.acked)} lost={len(lost)} "
        f"fenced={owner.stats().get('replication_fenced', 0)}"
    )
    print(f"\nSIGSTOP of {owner.name} for 10 s: {figures}")
    assert not lost, figures


def test_a_rolling_restart_waiting_on_replication_health_loses_nothing(cluster: Cluster) -> None:
    """Every node SIGTERMed and started again, one after another, under load; before the
    next one, every live node must answer ``healthy`` (each session it owns has its copy)."""
    clients = [Client(f"c{i}", cluster) for i in range(CLIENTS)]
    for c in clients:
        assert c.send("POST", f"/login?user={c.name}") is not None, c
    done = threading.Event()

    def shop(c: Client) -> None:
        seq = 0
        while not done.is_set() or seq < 10:
            seq += 1
            if c.send("POST", f"/cart/add?item=fig&seq={seq}") is not None:
                c.acked.add(seq)

    def healthy() -> bool:
        return all(get_json(n.port, "/_replication")["healthy"] for n in cluster.live())

    threads = [threading.Thread(target=shop, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    try:
        for node in cluster.nodes:
            assert wait_until(healthy, timeout_s=30), [
                get_json(n.port, "/_replication") for n in cluster.live()
            ]
            node.terminate()
            assert node.wait_stopped(timeout_s=30)
            node.start()
            node.wait_ready()
        assert wait_until(healthy, timeout_s=30)
    finally:
        done.set()
        for t in threads:
            t.join(120)
    lost = 0
    for c in clients:
        r = c.send("GET", "/cart")
        assert r is not None
        lost += len(c.acked - seqs_of(r.json()))
    requests = sum(c.requests for c in clients)
    acked = sum(len(c.acked) for c in clients)
    figures = f"requests={requests} acknowledged={acked} lost={lost}"
    print(f"\nrolling restart of 3 nodes: {figures}")
    assert lost == 0, figures


@pytest.mark.parametrize("connects", ["at once", "slowly"])
def test_the_readme_counter_under_gunicorn_w4_and_time_based_counts_without_a_gap(
    nats: NatsServer, tmp_path: Path, request: pytest.FixtureRequest, connects: str
) -> None:
    """No sticky balancer: the kernel hands each connection to any of 4 workers. With the
    channel (``replicas=0``), a worker that gets a session another one served asks it for its
    unwritten changes (TimeBased(10) has written none of them yet). ``slowly``: each worker's
    first connection to NATS takes 0.8 s (:class:`SlowConnects`). A worker whose first request
    waited only 0.5 s for it read 1, 2, 2, 2, 3, ...; one that created the session before it
    was connected (so no worker could ask it) read 1, 2, 2, 3, ... (CI, under load)."""
    nats_url = nats.url if connects == "at once" else request.getfixturevalue("slow_nats").url
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    SqlStore(url).init_schema()
    port = free_port()
    env = {**os.environ, "SK_TEST_STORE": url, "SK_TEST_NATS": nats_url}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "gunicorn", "-w", "4", "-b", f"127.0.0.1:{port}",
           "tests.replication.counter_app:application"]  # fmt: skip
    with open(tmp_path / "gunicorn.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: _answers(port), timeout_s=20), (
            tmp_path / "gunicorn.log"
        ).read_text()
        sid, counts, owners = None, [], set()
        for _ in range(60):
            r = httpx.get(
                f"http://127.0.0.1:{port}/", headers={"Cookie": f"sessionid={sid}"} if sid else {}
            )
            assert r.status_code == 200, (tmp_path / "gunicorn.log").read_text()[-3000:]
            sid = r.cookies.get("sessionid", sid)
            counts.append(int(r.text.split()[1]))
            owners.add(sid.split(".")[1] if sid else "")
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"\ngunicorn -w 4, TimeBased(10), no affinity: 60 requests, {len(owners)} workers served")
    assert counts == list(range(1, 61))
    assert len(owners) >= 2  # the session did move between workers


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
