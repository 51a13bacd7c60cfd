"""The replication scenario: demo nodes with ``replication=`` over a private nats-server, behind
the same nginx, the same shoppers, and a timeline that SIGKILLs a node, SIGTERMs another and
restarts the NATS server.

Two configurations, each in its own run:

| name | store | write | replication |
|---|---|---|---|
| ``memory`` | ``memory://`` on each node: no database | ``end-of-request`` | 1 replica, ``ack="sync"`` |
| ``tiered`` | the private PostgreSQL (a fresh database) | ``time-based:60`` | 1 replica, ``ack="sync"`` |

Without a database the sessions are only in the nodes' memory, so the check reads every cart
back from the live nodes (once each answers ``/_replication`` healthy) before they stop, as
``sessionkeeper demo --replication`` does.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from sessionkeeper.demo.cluster import Cluster, Node, free_port
from sessionkeeper.demo.driver import User
from sessionkeeper.demo.peers import Peers, Tally, peers_at_end, read_nodes, wait_healthy
from sessionkeeper.demo.report import Crash, Found, read_store
from sessionkeeper.stores import open_store

from .nats import PrivateNats
from .nginx import Backend, Nginx, fallbacks
from .postgres import PrivatePostgres
from .scenario import BalancedShoppers, Failure, FaultThread, Say, Window, Words, _fresh_database


@dataclass(frozen=True)
class PeerSetup:
    name: str
    write: str
    durable: bool  # on the private PostgreSQL; else memory:// on each node
    # Both replicate with the defaults: sk.Replication(url) = 1 replica, ack="sync".


SETUPS = {
    "memory": PeerSetup("memory", "end-of-request", durable=False),
    "tiered": PeerSetup("tiered", "time-based:60", durable=True),
}


@dataclass(frozen=True)
class PeerTimeline:
    """When each fault happens, in seconds since the shoppers started."""

    kill_at_s: float  # SIGKILL the busiest node: its backups take over
    restart_killed_after_s: float
    term_at_s: float  # SIGTERM the busiest other node: it hands its sessions over
    nats_stop_at_s: float  # the NATS server stopped ...
    nats_down_s: float  # ... and started again (same port) this much later
    duration_s: float

    def __post_init__(self) -> None:
        order = [
            0.0,
            self.kill_at_s,
            self.kill_at_s + self.restart_killed_after_s,
            self.term_at_s,
            self.nats_stop_at_s,
            self.nats_stop_at_s + self.nats_down_s,
            self.duration_s,
        ]
        if order != sorted(order) or self.nats_down_s <= 0:
            raise ValueError(f"the timeline's events must come in order: {self}")


FULL_PEERS = PeerTimeline(10, 5, 20, 32, 5, 50)
SHORT_PEERS = PeerTimeline(3, 1.5, 7, 10.5, 2, 16)


@dataclass
class PeerRun:
    """Everything measured in one configuration's run; :mod:`.peer_verdict` judges it."""

    setup: PeerSetup
    users: list[User]
    requests: int
    changed: int
    failovers: int
    failures: list[Failure]
    windows: list[Window]
    crash: Crash | None
    terminated: str | None
    found: Found
    peers: Peers
    nginx_fallbacks: int
    clean_stop: bool
    events: list[str] = field(default_factory=list)


_WORDS = Words("owner for", "its backups take over", "handing its sessions over", "memory")


class _PeerFaults(FaultThread):
    """Runs the timeline against the cluster and the NATS server."""

    def __init__(
        self,
        cluster: Cluster,
        shoppers: BalancedShoppers,
        nats: PrivateNats,
        t: PeerTimeline,
        tally: Tally,
        say: Say,
    ) -> None:
        super().__init__("peer-faults", cluster, shoppers)
        self.shoppers: BalancedShoppers = shoppers
        self.nats, self.t = nats, t
        self.tally, self.say = tally, say

    def _before_stop(self, node: Node) -> None:
        self.tally.sample(node)  # its counters die with it

    def _run(self) -> None:
        t, now = self.t, self.shoppers.now_s
        victim = self._kill_then_restart(t.kill_at_s, t.restart_killed_after_s, self.say, _WORDS)
        if victim is None or not self._stop_then_restart(t.term_at_s, victim, self.say, _WORDS):
            return

        if not self._at(t.nats_stop_at_s):
            return
        start = now()
        self.nats.stop()
        self.say(f"NATS server stopped for {t.nats_down_s:g} s")
        try:
            self.cancel.wait(max(0.0, t.nats_stop_at_s + t.nats_down_s - now()))
        finally:
            self.nats.start()
        self.windows.append(Window("nats", start, now()))
        self.say("NATS server back (same port)")


def run_setup(
    pg: PrivatePostgres,
    setup: PeerSetup,
    t: PeerTimeline,
    nodes: int,
    users: int,
    workdir: Path,
    say: Say,
) -> PeerRun:
    """One run of the replication timeline under ``setup``, on a private nats-server."""
    logs = workdir / f"peers_{setup.name}"
    logs.mkdir(parents=True, exist_ok=True)
    url = _fresh_database(pg, f"chaos_peers_{setup.name}") if setup.durable else "memory://"
    if setup.durable:
        store = open_store(url)
        try:
            getattr(store, "init_schema", lambda: None)()
        finally:
            store.close()
    with PrivateNats(logs / "nats.log") as nats:
        cluster_name = f"chaos-{setup.name}-{os.getpid()}"
        with Cluster(nodes, url, setup.write, logs, nats.url, cluster_name) as cluster:
            cluster.start()
            backends = [Backend(n.name, f"127.0.0.1:{n.port}") for n in cluster.nodes]
            (logs / "nginx").mkdir(exist_ok=True)
            with Nginx(backends, free_port(), logs / "nginx") as nginx:
                say(f"[{setup.name}] {nodes} nodes on NATS :{nats.port}, nginx on :{nginx.port}")
                return _shop(cluster, nginx, nats, url, setup, t, users, say)


def _shop(
    cluster: Cluster,
    nginx: Nginx,
    nats: PrivateNats,
    url: str,
    setup: PeerSetup,
    t: PeerTimeline,
    users: int,
    say: Say,
) -> PeerRun:
    shoppers = BalancedShoppers(cluster, users, time.monotonic(), nginx.port)
    events: list[str] = []

    def log(text: str) -> None:
        line = f"{shoppers.now_s():5.1f}s  {text}"
        events.append(line)
        say(f"[{setup.name}] {line}")

    tally = Tally()
    faults = _PeerFaults(cluster, shoppers, nats, t, tally, log)
    shoppers.start()
    faults.start()
    try:
        while shoppers.now_s() < t.duration_s and faults.error is None:
            time.sleep(min(1.0, max(0.0, t.duration_s - shoppers.now_s())))
            tally.sample_all(cluster)
    finally:
        faults.cancel.set()
        shoppers.stop()
        faults.join(timeout=120)
        if not nats.running:
            nats.start()
    if faults.error is not None:
        raise RuntimeError(f"the replication timeline failed: {faults.error!r}") from faults.error
    log("shoppers stopped; waiting for /_replication healthy, reading every cart from the nodes")
    healthy = wait_healthy(cluster)
    peers = peers_at_end(cluster, tally, healthy)
    found = read_nodes(cluster, shoppers.users)
    log("stopping every node gracefully")
    clean = cluster.stop()
    if setup.durable:
        store = open_store(url)
        try:
            writes = read_store(store, shoppers.users, time.time()).writes
        finally:
            store.close()
        found = Found(found.sessions, writes, found.seqs)
    counters = shoppers.snapshot()
    return PeerRun(
        setup=setup,
        users=shoppers.users,
        requests=counters.requests,
        changed=counters.changed,
        failovers=counters.failovers,
        failures=list(shoppers.failures),
        windows=faults.windows,
        crash=faults.crash,
        terminated=faults.terminated,
        found=found,
        peers=peers,
        nginx_fallbacks=fallbacks(nginx.access_log()),
        clean_stop=clean,
        events=events,
    )
