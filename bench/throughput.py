"""Section: throughput and latency across processes, through real servers and a socket.

Each contender is a small app (bench/apps/) served by 4 worker processes: gunicorn with gthread
workers for the WSGI (Flask) ones, uvicorn for the ASGI (Starlette) ones. A load generator on
loopback keeps one session per connection: it sends back the cookie the server last set on that
connection, and every request changes the session (a counter). Keep-alive connections stay on the
worker that accepted them, which is the affinity a sticky load balancer gives.

The load generator is ``wrk`` (``scripts/ensure-wrk.sh`` installs it from Debian), one thread per
connection so that a thread's Lua state is its connection's, with a script that captures
``Set-Cookie`` in ``response()`` and sends it back in ``request()``. Without wrk (or with
``SESSIONKEEPER_BENCH_LOADGEN=python``) a bounded asyncio load generator in this process does the
same over raw sockets; the section says which one ran.

Every server is started by the benchmark on a free loopback port and always stopped (SIGTERM to
its process group, SIGKILL after a bounded wait). The same runs feed bench/storeload.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sessionkeeper.demo.cluster import free_port

from . import storecounters
from .report import BenchConfig, Section, SectionResult, Table, ratio

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORKERS = 4
LOADGEN_ENV = "SESSIONKEEPER_BENCH_LOADGEN"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Scale:
    seconds: int  # measured run
    warmup_s: int  # a run before it, not measured (0: none)
    connections: int


FULL = Scale(seconds=5, warmup_s=1, connections=16)
QUICK = Scale(seconds=1, warmup_s=0, connections=8)


@dataclass(frozen=True)
class Contender:
    group: str  # "WSGI" or "ASGI"
    label: str
    session: str  # BENCH_SESSION
    store: str | None = None  # "sqlite", "postgres", "mysql", "redis"
    write: str = ""  # sessionkeeper's policy, as a --write string
    needs: str | None = None  # a module that must be importable (a peer not installed: skipped)
    needs_hint: str = ""
    replication: str = ""  # sessionkeeper's ack mode with replication on the local nats-server

    @property
    def peer(self) -> bool:
        """Another session implementation, the yardstick for sessionkeeper's rows."""
        return self.session not in ("none", "sessionkeeper")


POLICIES = [("EndOfRequest", "end-of-request"), ("TimeBased(10)", "time-based:10")]
STORES = [("sqlite", "SQLite"), ("postgres", "PostgreSQL"), ("mysql", "MySQL"), ("redis", "Redis")]


def _keeper(group: str) -> list[Contender]:
    return [
        Contender(group, f"sessionkeeper {policy}, {name}", "sessionkeeper", store, write)
        for store, name in STORES
        for policy, write in POLICIES
    ]


#: Memory-to-memory replication: the workers back each other up (bench/apps, BENCH_REPLICATION).
REPLICATED = [
    Contender("WSGI", f"sessionkeeper EndOfRequest, memory + replication ack={ack}",
              "sessionkeeper", None, "end-of-request", replication=ack)
    for ack in ("sync", "async")
]  # fmt: skip


CONTENDERS: list[Contender] = [
    Contender("WSGI", "no session", "none"),
    Contender("WSGI", "Flask built-in (signed cookie)", "builtin"),
    Contender(
        "WSGI",
        "Flask-Session, Redis",
        "flask-session",
        "redis",
        needs="flask_session",
        needs_hint="Flask-Session not installed (pip install -r bench/requirements.txt)",
    ),
    *_keeper("WSGI"),
    *REPLICATED,
    Contender("ASGI", "no session", "none"),
    Contender("ASGI", "Starlette built-in (signed cookie)", "builtin"),
    Contender(
        "ASGI",
        "starsessions, Redis",
        "starsessions",
        "redis",
        needs="starsessions",
        needs_hint="starsessions not installed (pip install -r bench/requirements.txt)",
    ),
    *_keeper("ASGI"),
]
QUICK_LABELS = ("no session", "sessionkeeper EndOfRequest, PostgreSQL")
QUICK_CONTENDERS = [c for c in CONTENDERS if c.group == "WSGI" and c.label in QUICK_LABELS]
GROUP_TITLES = {
    "WSGI": f"Flask under gunicorn ({WORKERS} gthread workers, 4 threads each)",
    "ASGI": f"Starlette under uvicorn ({WORKERS} workers)",
}


# -- load generators --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    errors: int  # connect/read/write errors, timeouts and responses of status >= 400

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


WRK_SCRIPT = r"""
-- One connection per thread (wrk -tN -cN), so this thread's state is its connection's session.
local cookie = nil

function request()
  if cookie then
    return wrk.format("GET", "/", {["Cookie"] = cookie})
  end
  return wrk.format("GET", "/")
end

function response(status, headers, body)
  for name, value in pairs(headers) do
    if string.lower(name) == "set-cookie" then
      cookie = string.match(value, "^[^;]+")
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("SKBENCH %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def loadgen_name() -> str:
    forced = os.environ.get(LOADGEN_ENV, "")
    if forced == "python" or (forced != "wrk" and shutil.which("wrk") is None):
        return "python"
    return "wrk"


def ensure_wrk() -> None:
    """Run scripts/ensure-wrk.sh once (installs wrk from Debian when it is missing)."""
    if shutil.which("wrk") or os.environ.get(LOADGEN_ENV) == "python":
        return
    script = ROOT / "scripts" / "ensure-wrk.sh"
    if script.exists():
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(["bash", str(script)], timeout=600, check=False)


def run_wrk(port: int, seconds: int, connections: int, tmp: Path) -> Load:
    script = tmp / "session.lua"
    script.write_text(WRK_SCRIPT)
    cmd = [
        "wrk",
        f"-t{connections}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}/",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("SKBENCH "):
            n, duration_us, p50_us, p99_us, errors = (int(x) for x in line.split()[1:])
            return Load(n, duration_us / 1e6, p50_us / 1000, p99_us / 1000, errors)
    raise RuntimeError(f"wrk printed no result (exit {out.returncode}): {out.stderr.strip()}")


async def _python_connection(
    port: int, deadline: float, latencies: list[float], errors: list[int]
) -> None:
    """One keep-alive connection: GET / with its session cookie until ``deadline``."""
    cookie: str | None = None
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), 5
                )
            assert reader is not None
            head = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            if cookie:
                head += f"Cookie: {cookie}\r\n"
            t0 = time.perf_counter()
            writer.write((head + "\r\n").encode())
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            length, close = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name, value = name.strip().lower(), value.strip()
                if name == "content-length":
                    length = int(value)
                elif name == "set-cookie":
                    cookie = value.split(";", 1)[0]
                elif name == "connection" and value.lower() == "close":
                    close = True
            if length:
                await asyncio.wait_for(reader.readexactly(length), 5)
            latencies.append(time.perf_counter() - t0)
            if status >= 400:
                errors[0] += 1
            if close:
                writer.close()
                writer = None
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            errors[0] += 1
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


def run_python(port: int, seconds: int, connections: int) -> Load:
    """The fallback load generator: ``connections`` asyncio connections for ``seconds``."""
    latencies: list[float] = []
    errors = [0]

    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        deadline = t0 + seconds
        tasks = [_python_connection(port, deadline, latencies, errors) for _ in range(connections)]
        await asyncio.wait_for(asyncio.gather(*tasks), seconds + 15)
        return loop.time() - t0

    duration = asyncio.run(main())
    ordered = sorted(latencies)
    if not ordered:
        return Load(0, duration, 0.0, 0.0, errors[0])

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000

    return Load(len(ordered), duration, pct(0.5), pct(0.99), errors[0])


def make_load(port: int, seconds: int, connections: int, tmp: Path) -> Load:
    if loadgen_name() == "wrk":
        return run_wrk(port, seconds, connections, tmp)
    return run_python(port, seconds, connections)


# -- servers ----------------------------------------------------------------------------------------


def server_command(group: str, port: int) -> list[str]:
    if group == "WSGI":
        return [
            str(BIN / "gunicorn"),
            "-c",
            "python:bench.apps.gunicorn_conf",
            "-w",
            str(WORKERS),
            "-b",
            f"127.0.0.1:{port}",
            "bench.apps.wsgi_app:app",
        ]
    return [  # uvicorn --workers, with TCP_NODELAY (see bench/apps/uvicorn_run.py)
        sys.executable,
        "-m",
        "bench.apps.uvicorn_run",
        "--workers",
        str(WORKERS),
        "--port",
        str(port),
        "bench.apps.asgi_app:app",
    ]


def _healthy(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


@contextlib.contextmanager
def server(group: str, env: dict[str, str], log: Path) -> Iterator[int]:
    """A server of ``group`` on a free loopback port, answering; always stopped on exit."""
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            server_command(group, port),
            cwd=ROOT,
            # This tree's source first: the venv may hold an editable install of another tree.
            env={**os.environ, **env, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the workers are stopped with it
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(port):
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"server not answering after {START_TIMEOUT_S:g} s: {_tail(log)}"
                )
            time.sleep(0.1)
        time.sleep(0.3)  # the other workers are booting too
        yield port
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # The master is gone; give its workers (same group) a moment, then make sure.
        time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


def _tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


# -- the runs ---------------------------------------------------------------------------------------


@dataclass
class Run:
    contender: Contender
    load: Load | None = None
    store_load: storecounters.StoreLoad | None = None
    skipped: str | None = None
    log_tail: str = ""
    load_avg: float = 0.0  # the machine's 1-minute load average at the end of the run

    @property
    def label(self) -> str:
        return f"{self.contender.group}: {self.contender.label}"


_RUNS: dict[bool, list[Run]] = {}
_NOTES: dict[bool, list[str]] = {}
_FALLBACKS: dict[bool, list[str]] = {}


def setup_notes(config: BenchConfig) -> list[str]:
    return _NOTES.get(config.quick, [])


def runs(config: BenchConfig) -> list[Run]:
    """Every contender's run, made once per process (throughput and storeload share them)."""
    if config.quick not in _RUNS:
        _RUNS[config.quick] = _run_all(config)
    return _RUNS[config.quick]


def _run_all(config: BenchConfig) -> list[Run]:
    scale = QUICK if config.quick else FULL
    contenders = QUICK_CONTENDERS if config.quick else CONTENDERS
    ensure_wrk()
    generator = loadgen_name()
    notes: list[str] = []
    if generator == "wrk":
        notes.append(
            f"load generator: wrk, {scale.connections} connections on {scale.connections} "
            "threads (one session per connection, cookie kept by a Lua script)"
        )
    else:
        why = "forced" if os.environ.get(LOADGEN_ENV) == "python" else "wrk is not installed"
        notes.append(
            f"load generator: bounded Python asyncio client ({why}), {scale.connections} "
            "connections in the benchmark process (its own CPU use may cap the highest rates)"
        )
    _NOTES[config.quick] = notes
    out: list[Run] = []
    with (
        tempfile.TemporaryDirectory(prefix="sk-throughput-") as tmp_name,
        storecounters.StoreServers() as stores,
    ):
        tmp = Path(tmp_name)
        for i, c in enumerate(contenders):
            run = Run(c)
            out.append(run)
            if c.needs and importlib.util.find_spec(c.needs) is None:
                run.skipped = c.needs_hint
                continue
            reason = stores.unavailable_reason(c.store) if c.store not in (None, "sqlite") else None
            if reason:
                run.skipped = reason
                continue
            print(f"  throughput: {run.label} ...", end="", flush=True, file=sys.stderr)
            try:
                _run_one(run, scale, tmp / f"run{i}", stores)
            except Exception as exc:
                run.skipped = f"failed: {type(exc).__name__}: {exc}"
            print(
                f" {run.load.rps:,.0f} req/s" if run.load else f" {run.skipped}",
                file=sys.stderr,
                flush=True,
            )
        _FALLBACKS[config.quick] = list(stores.fallbacks)
    return out


def _run_one(run: Run, scale: Scale, tmp: Path, stores: storecounters.StoreServers) -> None:
    c = run.contender
    tmp.mkdir(parents=True)
    env = {"BENCH_SESSION": c.session, "BENCH_WRITE": c.write}
    counters: storecounters.Counters | None = None
    if c.replication:
        cluster = storecounters.unique_prefix("redis").rstrip(":")
        env |= {"BENCH_STORE": "memory://", "BENCH_REPLICATION": f"{c.replication}:{cluster}"}
    if c.store == "sqlite":
        env["BENCH_STORE"] = f"sqlite:///{tmp / 'sessions.db'}"
    elif c.store is not None:
        env["BENCH_PREFIX"] = prefix = storecounters.unique_prefix(c.store)
        counters = stores.counters(c.store, prefix)
    meter = storecounters.Meter(counters) if counters else None
    log = tmp / "server.log"
    try:
        if counters is not None:
            env["BENCH_STORE"] = counters.prepare()
        if meter:
            meter.start()
        requests = 0
        with server(c.group, env, log) as port:
            if scale.warmup_s:
                requests += make_load(port, scale.warmup_s, scale.connections, tmp).requests
            load = make_load(port, scale.seconds, scale.connections, tmp)
            requests += load.requests
            run.load_avg = os.getloadavg()[0]
        run.load = load
        if meter:
            run.store_load = meter.stop(requests)
        if load.errors:
            run.log_tail = _tail(log)
    finally:
        if counters is not None:
            with contextlib.suppress(Exception):
                counters.cleanup()


# -- the section ------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def group_table(group: str, group_runs: list[Run], result: SectionResult) -> Table:
    done = [r for r in group_runs if r.load is not None]
    bare = next((r for r in done if r.contender.session == "none"), None)
    peers = [r for r in done if r.contender.peer]
    fastest = max(peers, key=lambda r: r.load.rps if r.load else 0.0, default=None)
    rows = []
    for r in done:
        assert r.load is not None
        rps = r.load.rps
        rows.append(
            [
                r.contender.label,
                f"{rps:,.0f}",
                _ms(r.load.p50_ms),
                _ms(r.load.p99_ms),
                ratio(rps / fastest.load.rps) if fastest and fastest.load else "-",
                ratio(rps / bare.load.rps) if bare and bare.load else "-",
                f"{r.load.errors:,}",
                f"{r.load_avg:.1f}",
            ]
        )
        if r.load.errors:
            result.notes.append(f"{r.label}: {r.load.errors} errors; server log: {r.log_tail}")
    if fastest is not None:
        result.notes.append(f"{group}: fastest peer is {fastest.contender.label}")
    return Table(
        [
            GROUP_TITLES[group],
            "requests/s",
            "p50 ms",
            "p99 ms",
            "vs fastest peer",
            "vs no session",
            "errors",
            "load avg",
        ],
        rows,
    )


def run(config: BenchConfig) -> SectionResult:
    scale = QUICK if config.quick else FULL
    all_runs = runs(config)
    result = SectionResult(
        "Throughput and latency across processes",
        f"Real servers on loopback, {WORKERS} worker processes each, and a load generator with "
        f"{scale.connections} keep-alive connections, each keeping its own session (the cookie "
        "the server set last on it) and changing it on every request (a counter). Each run: "
        f"{scale.warmup_s} s warm-up, then {scale.seconds} s measured; p50 and p99 are the "
        "load generator's request latencies. Ratios compare requests/s with the fastest peer "
        "(another session library or the framework's own, on the same server) and with the same "
        "app without sessions. Keep-alive connections stay on one worker, so a session is always "
        "served by the worker that caches it (what a sticky load balancer gives). The load "
        f"generator, the workers and the stores share this machine's {os.cpu_count()} CPUs.",
        notes=[
            *setup_notes(config),
            "uvicorn runs its multi-worker mode through bench/apps/uvicorn_run.py, which turns "
            "TCP_NODELAY back on: `uvicorn --workers N` leaves Nagle's algorithm on for accepted "
            "connections, which adds ~40 ms to every keep-alive request and hid every "
            "difference between the ASGI contenders",
            "PostgreSQL and Redis are private servers the benchmark starts (PostgreSQL with its "
            "default settings, fsync on), so that their counters (next section) count these runs "
            "alone; MySQL is the machine's shared MariaDB",
            "each row is one run on a shared machine: *load avg* is the machine's 1-minute load "
            "average at its end; runs under a higher load are slower for reasons of their own, "
            "and differences of less than about a third between rows are within run-to-run "
            "variation here",
        ],
    )
    for group in ("WSGI", "ASGI"):
        group_runs = [r for r in all_runs if r.contender.group == group]
        if any(r.load for r in group_runs):
            result.tables.append(group_table(group, group_runs, result))
    for r in all_runs:
        if r.skipped:
            result.notes.append(f"skipped: {r.label}: {r.skipped}")
    result.notes.extend(_FALLBACKS.get(config.quick, []))
    return result


SECTION = Section("throughput", run)
