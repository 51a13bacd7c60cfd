"""``sessionkeeper demo``: start the nodes, let the shoppers shop, crash and stop nodes mid-run,
then check every acknowledged update against the store.

Timeline, as fractions of ``duration_s``: at 0.25 one node is SIGKILLed (a crash) and at 0.40
restarted; at 0.55 another is SIGTERMed (a graceful stop, which flushes) and at 0.70 restarted.
One node at a time is ever down, so two nodes are enough.

With ``replication`` (a ``nats://`` URL) the nodes also copy every session to a backup in another
node's memory (:mod:`.peers`); without a ``store`` they then keep no database at all.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..errors import ConfigurationError
from ..policies import WritePolicy, parse_policy
from ..replication import Replication
from ..stores import Store, open_store
from .cluster import Cluster, Node, check_gunicorn
from .driver import Shoppers
from .peers import Peers, Tally, peers_at_end, read_nodes, wait_healthy
from .report import Crash, Found, Outcome, outcome, read_store

Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    nodes: int = 3
    users: int = 8
    duration_s: float = 20.0
    write: str = "end-of-request"
    store: str | None = None  # default: SQLite, or memory:// with replication
    keep: bool = False
    replication: str | None = None  # a nats:// URL: memory-to-memory replication

    @property
    def store_url_default(self) -> str | None:
        return self.store or ("memory://" if self.replication else None)

    @property
    def durable_store(self) -> bool:
        url = self.store_url_default
        return url is None or url.split(":", 1)[0].lower() != "memory"


def check_options(opts: DemoOptions) -> None:
    """Raises :class:`ConfigurationError` for options the demo cannot run with."""
    if opts.nodes < 2:
        raise ConfigurationError("--nodes must be at least 2: one is crashed mid-run")
    if opts.users < 1:
        raise ConfigurationError("--users must be at least 1")
    if not 2 <= opts.duration_s <= 3600:
        raise ConfigurationError("--duration-s must be between 2 and 3600")
    parse_policy(opts.write)
    if opts.replication is not None:
        Replication(opts.replication)  # raises for a URL that is not nats://
    elif not opts.durable_store:
        raise ConfigurationError(
            "the nodes are separate processes: memory:// cannot be shared (unless they "
            "replicate: --replication nats://...)"
        )


class _Chaos(threading.Thread):
    """Crashes one node, restarts it, stops another gracefully, restarts it."""

    def __init__(
        self, cluster: Cluster, shoppers: Shoppers, duration_s: float, say: Say, tally: Tally
    ) -> None:
        super().__init__(name="chaos", daemon=True)
        self.cluster, self.shoppers, self.duration_s, self.say = cluster, shoppers, duration_s, say
        self.tally = tally  # a node's replication counters die with it: read them first
        self.crash: Crash | None = None
        self.error: BaseException | None = None
        self.cancel = threading.Event()

    def _at(self, fraction: float) -> bool:
        """Sleep until that point of the run; False when cancelled."""
        delay = fraction * self.duration_s - self.shoppers.now_s()
        return not self.cancel.wait(max(0.0, delay))

    def _busiest(self, exclude: Node | None = None) -> Node:
        live = [n for n in self.cluster.live() if n is not exclude] or self.cluster.live()
        return max(live, key=lambda n: self.shoppers.users_on(n.name))

    def run(self) -> None:
        try:
            if not self._at(0.25):
                return
            victim = self._busiest()
            users = self.shoppers.users_on(victim.name)
            self.tally.sample(victim)
            self.crash = Crash(victim.name, self.shoppers.now_s())
            victim.kill()
            self.say(f"SIGKILL {victim.name} (serving {users} users): a crash, nothing flushed")
            if not self._at(0.40):
                return
            self._restart(victim)
            if not self._at(0.55):
                return
            stopped = self._busiest(exclude=victim)
            users = self.shoppers.users_on(stopped.name)
            self.tally.sample(stopped)
            stopped.terminate()
            self.say(f"SIGTERM {stopped.name} (serving {users} users): draining, flushing")
            clean = stopped.wait_stopped()
            self.say(f"{stopped.name} stopped" + ("" if clean else " only when killed"))
            if not self._at(0.70):
                return
            self._restart(stopped)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _restart(self, node: Node) -> None:
        node.start()
        node.wait_ready()
        self.say(f"{node.name} restarted (empty cache)")


def run_demo(opts: DemoOptions, out: TextIO = sys.stderr) -> tuple[Outcome, str]:
    """Run the whole demo; returns the outcome and a description of the setup. Progress goes to
    ``out``. Raises :class:`ConfigurationError` for bad options and ``StoreError`` when the
    store cannot be used."""
    check_options(opts)
    check_gunicorn()
    policy = parse_policy(opts.write)
    workdir = Path(tempfile.mkdtemp(prefix="sessionkeeper-demo-"))
    try:
        return _run(opts, policy, workdir, out)
    finally:
        if opts.keep:
            print(f"kept {workdir} (store, node logs)", file=out)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(opts: DemoOptions, policy: WritePolicy, workdir: Path, out: TextIO) -> tuple[Outcome, str]:
    store_url = opts.store_url_default or f"sqlite:///{workdir / 'sessions.db'}"
    store = open_store(store_url)
    clock: list[float] = []  # set when the shoppers start: the timeline reads from there

    def say(text: str) -> None:
        when = f"{time.monotonic() - clock[0]:5.1f}s" if clock else "setup "
        print(f"[{when}] {text}", file=out, flush=True)

    where = store.describe() if opts.durable_store else "none (memory:// on each node)"
    setup = (
        f"{opts.nodes} nodes, {opts.users} users, {opts.duration_s:g} s, "
        f"write={policy.spec()}, store={where}"
    ) + (f", replication={opts.replication}" if opts.replication else "")
    say(f"starting {setup}")
    tally = Tally()
    try:
        init_schema = getattr(store, "init_schema", None)
        if init_schema is not None:
            init_schema()  # once, before the nodes start
        with Cluster(
            opts.nodes,
            store_url,
            policy.spec(),
            workdir,
            replication=opts.replication,
            cluster=f"sessionkeeper-demo-{os.getpid()}",  # two demos on one NATS stay apart
        ) as cluster:
            cluster.start()
            names = ", ".join(f"{n.name} on :{n.port}" for n in cluster.nodes)
            say(f"nodes up: {names}")
            clock.append(time.monotonic())
            shoppers = Shoppers(cluster, opts.users, clock[0])
            chaos = _Chaos(cluster, shoppers, opts.duration_s, say, tally)
            shoppers.start()
            chaos.start()
            try:
                sampled = tally if opts.replication else None
                _progress(shoppers, cluster, opts.duration_s, say, sampled)
            finally:
                chaos.cancel.set()
                shoppers.stop()
                chaos.join(timeout=60)
            if chaos.error is not None:
                raise RuntimeError(f"the demo could not run its timeline: {chaos.error}")
            peers = _check_peers(cluster, shoppers, tally, say) if opts.replication else None
            say(
                "stopping every node gracefully (SIGTERM: each flushes)"
                if opts.durable_store
                else "stopping every node (no database: the sessions end with the last one)"
            )
            cluster.stop()
        found = _found(store, shoppers, opts, peers)
        result = outcome(
            policy,
            shoppers.snapshot(),
            shoppers.acks(),
            found[0],
            chaos.crash,
            Replication(opts.replication) if opts.replication else None,
            found[1],
            opts.durable_store,
        )
    finally:
        store.close()
    return result, setup


def _check_peers(
    cluster: Cluster, shoppers: Shoppers, tally: Tally, say: Say
) -> tuple[Peers, Found]:
    """With replication, before the nodes stop: wait until each session has its copies, then
    read every cart back from the live nodes (without a database, they are all there is)."""
    say("waiting until every session has its copy (/_replication healthy on every node)")
    healthy = wait_healthy(cluster)
    if not healthy:
        say("replication still unhealthy: reading the carts anyway")
    peers = peers_at_end(cluster, tally, healthy)
    return peers, read_nodes(cluster, shoppers.users)


def _found(
    store: Store, shoppers: Shoppers, opts: DemoOptions, peers: tuple[Peers, Found] | None
) -> tuple[Found, Peers | None]:
    if peers is None:
        return read_store(store, shoppers.users, time.time()), None
    if not opts.durable_store:
        return peers[1], peers[0]
    # In front of a database: the carts as the nodes showed them, the writes as the store saw.
    writes = read_store(store, shoppers.users, time.time()).writes
    return Found(peers[1].sessions, writes, peers[1].seqs), peers[0]


def _progress(
    shoppers: Shoppers, cluster: Cluster, duration_s: float, say: Say, tally: Tally | None
) -> None:
    last_requests = 0
    while shoppers.now_s() < duration_s:
        time.sleep(min(1.0, max(0.0, duration_s - shoppers.now_s())))
        if tally is not None:
            tally.sample_all(cluster)
        c = shoppers.snapshot()
        nodes = " ".join(f"{n.name}:{n.state.value}" for n in cluster.nodes)
        rate = c.requests - last_requests
        last_requests = c.requests
        acked = len(shoppers.acks())
        peers = ""
        if tally is not None:
            t = tally.totals()
            peers = (
                f", {t['replication_handoffs_received']} handoffs, "
                f"{t['replication_takeovers']} takeovers"
            )
        say(
            f"{nodes} | {c.requests} requests ({rate}/s), {acked} updates acked, "
            f"{c.failovers} failovers, {c.errors} unanswered{peers}"
        )
