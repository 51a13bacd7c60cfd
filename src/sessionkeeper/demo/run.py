"""``sessionkeeper demo``: start the nodes, let the shoppers shop, crash and stop nodes mid-run,
then check every acknowledged update against the store.

Timeline, as fractions of ``duration_s``: at 0.25 one node is SIGKILLed (a crash) and at 0.40
restarted; at 0.55 another is SIGTERMed (a graceful stop, which flushes) and at 0.70 restarted.
One node at a time is ever down, so two nodes are enough.
"""

from __future__ import annotations

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
from ..stores import open_store
from .cluster import Cluster, Node, check_gunicorn
from .driver import Shoppers
from .report import Crash, Outcome, outcome, read_store

Say = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    nodes: int = 3
    users: int = 8
    duration_s: float = 20.0
    write: str = "end-of-request"
    store: str | None = None  # default: SQLite in a temporary folder
    keep: bool = False


def check_options(opts: DemoOptions) -> None:
    """Raises :class:`ConfigurationError` for options the demo cannot run with."""
    if opts.nodes < 2:
        raise ConfigurationError("--nodes must be at least 2: one is crashed mid-run")
    if opts.users < 1:
        raise ConfigurationError("--users must be at least 1")
    if not 2 <= opts.duration_s <= 3600:
        raise ConfigurationError("--duration-s must be between 2 and 3600")
    parse_policy(opts.write)
    if opts.store is not None and opts.store.split(":", 1)[0].lower() == "memory":
        raise ConfigurationError("the nodes are separate processes: memory:// cannot be shared")


class _Chaos(threading.Thread):
    """Crashes one node, restarts it, stops another gracefully, restarts it."""

    def __init__(self, cluster: Cluster, shoppers: Shoppers, duration_s: float, say: Say) -> None:
        super().__init__(name="chaos", daemon=True)
        self.cluster, self.shoppers, self.duration_s, self.say = cluster, shoppers, duration_s, say
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
    store_url = opts.store or f"sqlite:///{workdir / 'sessions.db'}"
    store = open_store(store_url)
    clock: list[float] = []  # set when the shoppers start: the timeline reads from there

    def say(text: str) -> None:
        when = f"{time.monotonic() - clock[0]:5.1f}s" if clock else "setup "
        print(f"[{when}] {text}", file=out, flush=True)

    setup = (
        f"{opts.nodes} nodes, {opts.users} users, {opts.duration_s:g} s, "
        f"write={policy.spec()}, store={store.describe()}"
    )
    say(f"starting {setup}")
    try:
        init_schema = getattr(store, "init_schema", None)
        if init_schema is not None:
            init_schema()  # once, before the nodes start
        with Cluster(opts.nodes, store_url, policy.spec(), workdir) as cluster:
            cluster.start()
            names = ", ".join(f"{n.name} on :{n.port}" for n in cluster.nodes)
            say(f"nodes up: {names}")
            clock.append(time.monotonic())
            shoppers = Shoppers(cluster, opts.users, clock[0])
            chaos = _Chaos(cluster, shoppers, opts.duration_s, say)
            shoppers.start()
            chaos.start()
            try:
                _progress(shoppers, cluster, opts.duration_s, say)
            finally:
                chaos.cancel.set()
                shoppers.stop()
                chaos.join(timeout=60)
            if chaos.error is not None:
                raise RuntimeError(f"the demo could not run its timeline: {chaos.error}")
            say("stopping every node gracefully (SIGTERM: each flushes)")
            cluster.stop()
        found = read_store(store, shoppers.users, time.time())
        result = outcome(policy, shoppers.snapshot(), shoppers.acks(), found, chaos.crash)
    finally:
        store.close()
    return result, setup


def _progress(shoppers: Shoppers, cluster: Cluster, duration_s: float, say: Say) -> None:
    last_requests = 0
    while shoppers.now_s() < duration_s:
        time.sleep(min(1.0, max(0.0, duration_s - shoppers.now_s())))
        c = shoppers.snapshot()
        nodes = " ".join(f"{n.name}:{n.state.value}" for n in cluster.nodes)
        rate = c.requests - last_requests
        last_requests = c.requests
        acked = len(shoppers.acks())
        say(
            f"{nodes} | {c.requests} requests ({rate}/s), {acked} updates acked, "
            f"{c.failovers} failovers, {c.errors} unanswered"
        )
