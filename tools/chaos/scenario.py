"""The chaos timeline: demo nodes on a private PostgreSQL behind nginx, the demo's shoppers sending
through nginx, and, while they shop, a SIGKILL, a SIGTERM, a PostgreSQL restart and a database
cut-off. One run per write policy, each on a fresh database of the same server.

A monitor polls the store while the run goes on and notes when each acknowledged update first
appears there: its *staleness* is how long it was acknowledged but only in a node's memory.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from sessionkeeper.demo.app import APP_NAME, seqs_of
from sessionkeeper.demo.cluster import Cluster, Node, free_port
from sessionkeeper.demo.driver import Shoppers, User
from sessionkeeper.demo.report import Crash, Found, read_store
from sessionkeeper.errors import SessionKeeperError
from sessionkeeper.policies import parse_policy
from sessionkeeper.serialization import make_serializer
from sessionkeeper.stores import Store, open_store
from sessionkeeper.stores.base import RetryPolicy

from .nginx import Backend, Nginx, fallbacks
from .postgres import PrivatePostgres

Say = Callable[[str], None]
MONITOR_PERIOD_S = 0.2


@dataclass(frozen=True)
class Timeline:
    """When each fault happens, in seconds since the shoppers started."""

    kill_at_s: float  # SIGKILL the busiest node (a crash: nothing flushed)
    restart_killed_after_s: float  # it comes back (empty cache) this much later
    term_at_s: float  # SIGTERM the busiest other node (graceful: it flushes), restarted when gone
    pg_restart_at_s: float  # pg_ctl restart -m fast
    cutoff_at_s: float  # pg_ctl stop -m fast ...
    cutoff_s: float  # ... and start again this much later
    duration_s: float  # the shoppers stop here; then every node stops gracefully

    def __post_init__(self) -> None:
        order = [
            0.0,
            self.kill_at_s,
            self.kill_at_s + self.restart_killed_after_s,
            self.term_at_s,
            self.pg_restart_at_s,
            self.cutoff_at_s,
            self.cutoff_at_s + self.cutoff_s,
            self.duration_s,
        ]
        if order != sorted(order) or self.cutoff_s <= 0:
            raise ValueError(f"the timeline's events must come in order: {self}")


#: ``make chaos``: 90 s per policy, a 30 s cut-off.
FULL = Timeline(
    kill_at_s=10,
    restart_killed_after_s=5,
    term_at_s=20,
    pg_restart_at_s=30,
    cutoff_at_s=40,
    cutoff_s=30,
    duration_s=85,
)
#: tests/chaos: 17 s per policy, a 4 s cut-off.
SHORT = Timeline(
    kill_at_s=3,
    restart_killed_after_s=1.5,
    term_at_s=7,
    pg_restart_at_s=9.5,
    cutoff_at_s=11,
    cutoff_s=4,
    duration_s=17,
)


@dataclass(frozen=True)
class ChaosOptions:
    nodes: int = 3
    users: int = 8
    policies: tuple[str, ...] = ("end-of-request", "time-based:5")
    timeline: Timeline = FULL
    seed: int = 1


@dataclass(frozen=True)
class Failure:
    at_s: float
    status: int  # 0: no answer at all
    method: str


@dataclass(frozen=True)
class Window:
    """A fault, from when it was caused until the system should have recovered."""

    kind: str  # "kill", "term", "pg-restart", "cutoff"
    start_s: float
    end_s: float
    node: str = ""

    def covers(self, at_s: float, grace_s: float = 3.0) -> bool:
        return self.start_s <= at_s <= self.end_s + grace_s


class BalancedShoppers(Shoppers):
    """The demo's shoppers, every request sent to nginx, every failed request noted."""

    def __init__(
        self, cluster: Cluster, n: int, started_at: float, lb_port: int, seed: int = 1
    ) -> None:
        super().__init__(cluster, n, started_at, seed)
        self.lb_port = lb_port
        self.failures: list[Failure] = []
        self._failures_lock = threading.Lock()

    def target_port(self, user: User) -> int | None:
        return self.lb_port

    def answered(self, user: User, method: str, path: str, status: int) -> None:
        if status == 0 or status >= 500:
            with self._failures_lock:
                self.failures.append(Failure(self.now_s(), status, method))


class Monitor(threading.Thread):
    """Polls the store for every user's session and notes when each sequence number first
    appears there (seconds since the run started)."""

    def __init__(self, store_url: str, shoppers: Shoppers) -> None:
        super().__init__(name="staleness-monitor", daemon=True)
        self.store = open_store(store_url, retry=RetryPolicy(attempts=1), timeout_s=1, pool_size=1)
        self.shoppers = shoppers
        self.first_seen: dict[tuple[int, int], float] = {}
        self.polls = 0
        self.failed_polls = 0
        self._stop_event = threading.Event()
        self._serializer = make_serializer("json")

    def poll(self) -> None:
        at_s = self.shoppers.now_s()
        for user in self.shoppers.users:
            token = user.token
            if token is None:
                continue
            stored = self.store.load(APP_NAME, token)
            if stored is None:
                continue
            values = {k: self._serializer.loads(v) for k, v in stored.attributes.items()}
            for seq in seqs_of(values):
                self.first_seen.setdefault((user.index, seq), at_s)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.polls += 1
            try:
                self.poll()
            except (SessionKeeperError, ValueError, KeyError, TypeError):
                self.failed_polls += 1
            self._stop_event.wait(MONITOR_PERIOD_S)

    def finish(self) -> None:
        """Stop polling, then poll once more (the nodes have flushed by now)."""
        self._stop_event.set()
        self.join(timeout=30)
        with contextlib.suppress(SessionKeeperError):
            self.poll()
        self.store.close()


@dataclass
class PolicyRun:
    """Everything measured in one policy's run; :mod:`.verdict` judges it."""

    policy: str
    nodes: int
    users: list[User]
    requests: int
    ok: int
    changed: int
    failovers: int
    failures: list[Failure]
    windows: list[Window]
    crash: Crash | None
    terminated: str | None
    found: Found
    first_seen: dict[tuple[int, int], float]
    nginx_fallbacks: int
    clean_stop: bool
    duration_s: float
    events: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Words:
    """How a scenario's log names a node's part and what its crash and stop mean."""

    role: str  # "serving": "SIGKILL node-1 (serving 3 users)"
    on_kill: str
    on_term: str
    lost: str  # what a restarted node starts without: "restarted (empty cache)"


class FaultThread(threading.Thread):
    """What every scenario's fault thread shares: waiting for a moment of the timeline (cancellable),
    picking the busiest live node, and handing an exception to the main thread."""

    def __init__(self, name: str, cluster: Cluster, shoppers: Shoppers) -> None:
        super().__init__(name=name, daemon=True)
        self.cluster, self.shoppers = cluster, shoppers
        self.windows: list[Window] = []
        self.crash: Crash | None = None
        self.terminated: str | None = None
        self.error: BaseException | None = None
        self.cancel = threading.Event()

    def _at(self, at_s: float) -> bool:
        return not self.cancel.wait(max(0.0, at_s - self.shoppers.now_s()))

    def _busiest(self, exclude: Node | None = None) -> Node:
        live = [n for n in self.cluster.live() if n is not exclude] or self.cluster.live()
        return max(live, key=lambda n: self.shoppers.users_on(n.name))

    def _before_stop(self, node: Node) -> None:
        """Called just before ``node`` is killed or stopped; nothing here."""

    def _kill_then_restart(
        self, at_s: float, restart_after_s: float, say: Say, words: Words
    ) -> Node | None:
        """At ``at_s``, SIGKILL the busiest node; ``restart_after_s`` later, start it again. The
        node, or ``None`` when the run was cancelled first."""
        now = self.shoppers.now_s
        if not self._at(at_s):
            return None
        victim = self._busiest()
        users = self.shoppers.users_on(victim.name)
        self._before_stop(victim)
        start = now()
        victim.kill()
        self.crash = Crash(victim.name, start)
        say(f"SIGKILL {victim.name} ({words.role} {users} users): {words.on_kill}")
        if not self._at(at_s + restart_after_s):
            return None
        victim.start()
        victim.wait_ready()
        self.windows.append(Window("kill", start, now(), victim.name))
        say(f"{victim.name} restarted (empty {words.lost})")
        return victim

    def _stop_then_restart(self, at_s: float, victim: Node, say: Say, words: Words) -> bool:
        """At ``at_s``, SIGTERM the busiest node but ``victim`` and start it again once it
        exited; ``False`` when the run was cancelled first."""
        now = self.shoppers.now_s
        if not self._at(at_s):
            return False
        stopped = self._busiest(exclude=victim)
        users = self.shoppers.users_on(stopped.name)
        self._before_stop(stopped)
        start = now()
        self.terminated = stopped.name
        stopped.terminate()
        say(f"SIGTERM {stopped.name} ({words.role} {users} users): {words.on_term}")
        clean = stopped.wait_stopped()
        say(f"{stopped.name} exited after {now() - start:.1f} s" + ("" if clean else " (killed)"))
        stopped.start()
        stopped.wait_ready()
        self.windows.append(Window("term", start, now(), stopped.name))
        say(f"{stopped.name} restarted (empty {words.lost})")
        return True

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _run(self) -> None:
        raise NotImplementedError


_WORDS = Words("serving", "a crash, nothing flushed", "draining, flushing", "cache")


class _Faults(FaultThread):
    """Runs the timeline against the cluster and the database."""

    def __init__(
        self,
        cluster: Cluster,
        shoppers: Shoppers,
        pg: PrivatePostgres,
        timeline: Timeline,
        say: Say,
    ) -> None:
        super().__init__("faults", cluster, shoppers)
        self.pg, self.t, self.say = pg, timeline, say

    def _run(self) -> None:
        t, now = self.t, self.shoppers.now_s
        victim = self._kill_then_restart(t.kill_at_s, t.restart_killed_after_s, self.say, _WORDS)
        if victim is None or not self._stop_then_restart(t.term_at_s, victim, self.say, _WORDS):
            return

        if not self._at(t.pg_restart_at_s):
            return
        start = now()
        self.pg.restart()
        self.windows.append(Window("pg-restart", start, now()))
        self.say(f"PostgreSQL restarted (pg_ctl restart -m fast) in {now() - start:.1f} s")

        if not self._at(t.cutoff_at_s):
            return
        start = now()
        self.pg.stop()
        self.say(f"PostgreSQL cut off (pg_ctl stop -m fast) for {t.cutoff_s:g} s")
        try:
            self.cancel.wait(max(0.0, t.cutoff_at_s + t.cutoff_s - now()))
        finally:
            self.pg.start()
        self.windows.append(Window("cutoff", start, now()))
        self.say("PostgreSQL back")


def _fresh_database(pg: PrivatePostgres, name: str) -> str:
    with psycopg.connect(pg.url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg.url.rsplit("/", 1)[0] + "/" + name


def run_policy(
    pg: PrivatePostgres, spec: str, opts: ChaosOptions, workdir: Path, say: Say
) -> PolicyRun:
    """One run of the whole timeline under write policy ``spec``."""
    policy = parse_policy(spec)
    name = "chaos_" + "".join(c if c.isalnum() else "_" for c in policy.spec())
    url = _fresh_database(pg, name)
    logs = workdir / name
    logs.mkdir(parents=True, exist_ok=True)
    store: Store = open_store(url)
    try:
        init_schema = getattr(store, "init_schema", None)
        if init_schema is not None:
            init_schema()
        with Cluster(opts.nodes, url, policy.spec(), logs) as cluster:
            cluster.start()
            backends = [Backend(n.name, f"127.0.0.1:{n.port}") for n in cluster.nodes]
            (logs / "nginx").mkdir(exist_ok=True)
            with Nginx(backends, free_port(), logs / "nginx") as nginx:
                say(f"[{policy.spec()}] {opts.nodes} nodes behind nginx on :{nginx.port}")
                return _shop(pg, cluster, nginx, store, url, policy.spec(), opts, say)
    finally:
        store.close()


def _shop(
    pg: PrivatePostgres,
    cluster: Cluster,
    nginx: Nginx,
    store: Store,
    url: str,
    spec: str,
    opts: ChaosOptions,
    say: Say,
) -> PolicyRun:
    t = opts.timeline
    started = time.monotonic()
    shoppers = BalancedShoppers(cluster, opts.users, started, nginx.port, opts.seed)
    events: list[str] = []

    def log(text: str) -> None:
        line = f"{shoppers.now_s():5.1f}s  {text}"
        events.append(line)
        say(f"[{spec}] {line}")

    monitor = Monitor(url, shoppers)
    faults = _Faults(cluster, shoppers, pg, t, log)
    shoppers.start()
    monitor.start()
    faults.start()
    try:
        last = 0
        while shoppers.now_s() < t.duration_s and faults.error is None:
            time.sleep(min(5.0, max(0.0, t.duration_s - shoppers.now_s())))
            c = shoppers.snapshot()
            say(
                f"[{spec}] {shoppers.now_s():5.1f}s  {c.requests} requests "
                f"(+{c.requests - last}), {len(shoppers.acks())} updates acked, "
                f"{len(shoppers.failures)} failed"
            )
            last = c.requests
            if faults.error is not None:
                break
    finally:
        faults.cancel.set()
        shoppers.stop()
        faults.join(timeout=120)
        if not pg.running:
            pg.start()
    if faults.error is not None:
        raise RuntimeError(f"the chaos timeline failed: {faults.error!r}") from faults.error
    log("shoppers stopped; stopping every node gracefully (SIGTERM: each flushes)")
    clean = cluster.stop()
    monitor.finish()
    counters = shoppers.snapshot()
    found = read_store(store, shoppers.users, time.time())
    return PolicyRun(
        policy=spec,
        nodes=opts.nodes,
        users=shoppers.users,
        requests=counters.requests,
        ok=counters.ok,
        changed=counters.changed,
        failovers=counters.failovers,
        failures=list(shoppers.failures),
        windows=faults.windows,
        crash=faults.crash,
        terminated=faults.terminated,
        found=found,
        first_seen=dict(monitor.first_seen),
        nginx_fallbacks=fallbacks(nginx.access_log()),
        clean_stop=clean,
        duration_s=shoppers.now_s(),
        events=events,
    )
