"""Section: memory-to-memory replication, per changed request, beside EndOfRequest on each store.

One manager in this process serves changed requests in a loop (one ~1 KB attribute changed per
request, sessions cycled); its backup is a second manager in another process (``python -m
bench.replication backup URL CLUSTER``), on the local nats-server (127.0.0.1:4222, a cluster
of its own per run). Configurations, measured in interleaved rounds in one run:

* ``EndOfRequest`` on SQLite, PostgreSQL, MariaDB and Redis (no replication): the durable write
  each changed request costs today;
* ``memory://`` + replication, ``ack="sync"`` (the request waits for its backup's ack) and
  ``ack="async"`` (sent after it);
* ``TimeBased(60)`` on Redis + replication ``ack="sync"`` (the tiered topology);
* the floor: one request/reply of nats-py alone (``await nc.request`` on its own event loop, as
  many bytes as a replicated request sends) to an echo subscriber in another process, over the
  same nats-server. An ``ack="sync"`` request cannot cost less than that round trip.

Each round runs every configuration for ``requests`` requests; a configuration's figure is the
median per-request time of its rounds' medians, and the quietest (lowest) round is shown too.
Messages and bytes per request come from the replication counters of both processes.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sessionkeeper as sk

from .report import BenchConfig, Section, SectionResult, Table, Verdict, ratio
from .storecounters import store_url, unique_prefix

NATS_URL = os.environ.get("SESSIONKEEPER_BENCH_NATS_URL", "nats://127.0.0.1:4222")
KEY = b"bench cluster key"
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    sessions: int
    requests: int  # per configuration per round
    rounds: int


FULL = Sizes(sessions=200, requests=2000, rounds=5)
QUICK = Sizes(sessions=20, requests=150, rounds=2)


@dataclass
class Config:
    label: str
    store: str  # sqlite, postgres, mysql, redis, memory
    write: sk.WritePolicy
    ack: str | None  # None: no replication
    rounds_us: list[float] = field(default_factory=list)
    requests: int = 0
    sent: dict[str, float] = field(default_factory=dict)


def configs() -> list[Config]:
    eor = sk.EndOfRequest()
    return [
        Config("EndOfRequest, SQLite", "sqlite", eor, None),
        Config("EndOfRequest, PostgreSQL", "postgres", eor, None),
        Config("EndOfRequest, MariaDB", "mysql", eor, None),
        Config("EndOfRequest, Redis", "redis", eor, None),
        Config("memory + replication, ack=sync", "memory", eor, "sync"),
        Config("memory + replication, ack=async", "memory", eor, "async"),
        Config("TimeBased(60), Redis + replication, ack=sync", "redis", sk.TimeBased(60), "sync"),
    ]


# -- the backup process -------------------------------------------------------------------------


def backup_main(url: str, cluster: str) -> None:  # one per replicating configuration
    """A backup node: hold copies until SIGTERM, then print its replication counters."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    m = sk.SessionManager(
        "memory://", node="backup", cache_size=1_000_000, replication=replication(url, cluster)
    )
    m.start()
    print("ready", flush=True)
    stop.wait()
    stats = {k: v for k, v in m.stats().items() if k.startswith("replication_")}
    m.close()
    print(json.dumps(stats), flush=True)


def replication(url: str, cluster: str, ack: str = "sync") -> sk.Replication:
    return sk.Replication(url, cluster=cluster, key=KEY, ack=ack, heartbeat_s=0.5)  # type: ignore[arg-type]


def spawn(role: str, arg: str) -> subprocess.Popen[str]:
    """``python -m bench.replication ROLE NATS_URL ARG``, once it printed ``ready``."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.replication", role, NATS_URL, arg],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        proc.kill()
        raise RuntimeError(f"the {role} process did not start")
    return proc


@contextmanager
def backup_process(cluster: str) -> Iterator[Callable[[], dict[str, float]]]:
    """The backup node; yields a function that stops it and returns its counters."""
    proc = spawn("backup", cluster)
    result: dict[str, float] = {}

    def stop() -> dict[str, float]:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
            result.update(json.loads(out.strip().splitlines()[-1]))
        return result

    try:
        yield stop
    finally:
        stop()


def echo_main(url: str, subject: str) -> None:
    """The floor's other end: nats-py alone, answering each request with its own bytes."""
    import asyncio

    import nats

    async def serve() -> None:
        nc = await nats.connect(url)

        async def answer(msg: Any) -> None:
            await msg.respond(msg.data)

        await nc.subscribe(subject, cb=answer)
        await nc.flush()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()
        await nc.drain()

    asyncio.run(serve())


@contextmanager
def echo_process(subject: str) -> Iterator[None]:
    """The floor's echo, answering on ``subject`` until the block ends."""
    proc = spawn("echo", subject)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def floor_round(subject: str, requests: int, size: int) -> float:
    """The median microseconds of ``requests`` nats-py request/replies of ``size`` bytes."""
    import asyncio

    import nats

    async def measure() -> float:
        nc = await nats.connect(NATS_URL)
        payload = b"x" * size
        try:
            for _ in range(20):  # the connection's first requests set up its reply inbox
                await nc.request(subject, payload, timeout=2)
            perf, samples = time.perf_counter_ns, []
            for _ in range(requests):
                t0 = perf()
                await nc.request(subject, payload, timeout=2)
                samples.append(perf() - t0)
            return statistics.median(samples) / 1000
        finally:
            await nc.close()

    return asyncio.run(measure())


# -- the managers ---------------------------------------------------------------------------------


def store_for(kind: str, tmp: Path) -> sk.Store | str:
    if kind == "memory":
        return "memory://"
    prefix = unique_prefix("redis" if kind == "redis" else "sql")
    if kind == "redis":
        return sk.open_store(store_url("redis"), key_prefix=prefix)
    url = f"sqlite:///{tmp / (prefix + '.db')}" if kind == "sqlite" else store_url(kind)
    return sk.open_store(url, table_prefix=prefix)


def manager_for(c: Config, cluster: str, tmp: Path) -> sk.SessionManager:
    store = store_for(c.store, tmp)
    repl = replication(NATS_URL, cluster, c.ack) if c.ack else None
    return sk.SessionManager(
        store, write=c.write, node="owner", housekeeping=False, replication=repl
    )


def drop_tables(m: sk.SessionManager) -> None:
    store: Any = m.store
    if hasattr(store, "tables"):
        store.tables.metadata.drop_all(store.engine)
    elif hasattr(store, "key_prefix"):
        keys = list(store.client.scan_iter(match=f"{store.key_prefix}*", count=5000))
        for i in range(0, len(keys), 5000):
            store.client.delete(*keys[i : i + 5000])


def sessions_of(m: sk.SessionManager, n: int) -> list[str]:
    ids = []
    for i in range(n):
        with m.request("shop") as s:
            s["profile"] = {"user": f"user{i}", "seen": "x" * 900}
            s["n"] = 0
        ids.append(s.id)
    return ids


def one_round(m: sk.SessionManager, ids: list[str], requests: int, start: int) -> float:
    """The median microseconds of ``requests`` changed requests."""
    perf = time.perf_counter_ns
    samples = []
    k = len(ids)
    for i in range(start, start + requests):
        t0 = perf()
        with m.request("shop", ids[i % k]) as s:
            s["n"] = i
        samples.append(perf() - t0)
    return statistics.median(samples) / 1000


# -- the section ----------------------------------------------------------------------------------


FLOOR_BYTES = 212  # what a replicated request sent, per request, in the last full run


def measure(sizes: Sizes) -> tuple[list[Config], dict[str, float], list[float]]:
    """Each replicating configuration has a cluster of its own (its owner and its backup), so
    that no owner in this process is chosen as another's backup. The floor's rounds run
    between the configurations' rounds."""
    run_id = uuid.uuid4().hex[:8]
    cs = configs()
    floor: list[float] = []
    echo_subject = f"bench-{run_id}-echo"
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="sk-bench-repl-") as tmp:
        clusters = [f"bench-{run_id}-{i}" for i in range(len(cs))]
        stops = [
            stack.enter_context(backup_process(cl))
            for c, cl in zip(cs, clusters, strict=True)
            if c.ack
        ]
        stack.enter_context(echo_process(echo_subject))
        managers = [manager_for(c, cl, Path(tmp)) for c, cl in zip(cs, clusters, strict=True)]
        for m in managers:
            m.start()
            if m._replicator is not None:
                m._replicator.start()
                m._replicator.members.wait_for(lambda live: len(live) > 1, 10)
        ids = [sessions_of(m, sizes.sessions) for m in managers]
        before = [dict(m.stats()) for m in managers]
        for r in range(sizes.rounds):
            for c, m, sids in zip(cs, managers, ids, strict=True):
                c.rounds_us.append(one_round(m, sids, sizes.requests, r * sizes.requests))
                c.requests += sizes.requests
            floor.append(floor_round(echo_subject, sizes.requests, FLOOR_BYTES))
        for c, m, was in zip(cs, managers, before, strict=True):
            now = m.stats()
            c.sent = {
                k: float(now[k]) - float(was.get(k, 0))
                for k in ("replication_messages_sent", "replication_bytes_sent")
                if k in now
            }
        for m in managers:
            m.close()
            drop_tables(m)
        backup: dict[str, float] = {}
        for stop in stops:
            for k, v in stop().items():
                backup[k] = backup.get(k, 0.0) + v
    return cs, backup, floor


def run(config: BenchConfig) -> SectionResult:
    sizes = QUICK if config.quick else FULL
    result = SectionResult(
        "Replication: cost per changed request",
        f"{sizes.sessions} sessions of ~1 KB, one key changed per request, {sizes.requests} "
        f"requests per configuration per round, {sizes.rounds} interleaved rounds; one backup "
        f"in another process, over the local nats-server. Load average at the start: "
        f"{os.getloadavg()[0]:.2f}.",
    )
    try:
        cs, backup, floor = measure(sizes)
    except Exception as exc:  # a service down: say so, do not fail the run
        result.notes.append(f"skipped: {exc}")
        return result
    by = {c.label: c for c in cs}
    redis = statistics.median(by["EndOfRequest, Redis"].rounds_us)
    replies = backup.get("replication_messages_sent", 0.0)
    reply_bytes = backup.get("replication_bytes_sent", 0.0)
    rows = []
    for c in cs:
        median = statistics.median(c.rounds_us)
        msgs = c.sent.get("replication_messages_sent")
        per = f"{msgs / c.requests:.2f}" if msgs is not None else ""
        nbytes = c.sent.get("replication_bytes_sent")
        per_bytes = f"{nbytes / c.requests:.0f}" if nbytes is not None else ""
        rows.append(
            [
                c.label,
                f"{median:.0f}",
                f"{min(c.rounds_us):.0f}",
                ratio(median / redis),
                per,
                per_bytes,
            ]
        )
    floor_us = statistics.median(floor)
    rows.append(
        [
            f"floor: one NATS request/reply of {FLOOR_BYTES} bytes (nats-py alone, echo)",
            f"{floor_us:.0f}",
            f"{min(floor):.0f}",
            ratio(floor_us / redis),
            "1.00",
            f"{FLOOR_BYTES}",
        ]
    )
    result.tables.append(
        Table(
            ["configuration", "median µs", "quietest round µs", "vs EndOfRequest on Redis",
             "messages sent / request", "bytes sent / request"],
            rows,
        )
    )  # fmt: skip
    total = sum(c.requests for c in cs if c.ack)
    if total:
        result.notes.append(
            f"the backup sent {replies / total:.2f} replies ({reply_bytes / total:.0f} bytes) "
            "per replicated request"
        )
    sync = statistics.median(by["memory + replication, ack=sync"].rounds_us)
    result.verdicts.append(
        Verdict(
            "ack=sync below EndOfRequest on Redis",
            f"{sync:.0f} µs vs {redis:.0f} µs ({ratio(sync / redis)})",
            sync < redis,
        )
    )
    result.notes.append(
        f"ack=sync over its floor (one NATS request/reply): {sync:.0f} µs vs {floor_us:.0f} µs "
        f"({ratio(sync / floor_us)}); the floor alone is {ratio(floor_us / redis)} "
        "EndOfRequest on Redis"
    )
    result.notes.append(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return result


SECTION = Section("replication", run)


if __name__ == "__main__":
    if sys.argv[1:2] == ["backup"]:
        backup_main(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["echo"]:
        echo_main(sys.argv[2], sys.argv[3])
