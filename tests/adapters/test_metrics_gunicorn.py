"""``/metrics`` on a real gunicorn with several workers, in prometheus-client's multiprocess mode
with the shipped ``deploy/gunicorn_metrics.py``: whichever worker answers the scrape, the counters
are the sums over every worker of what the test sent, and they outlive the workers. Then the
ASGI form under uvicorn's workers.

The test reads the workers' files itself while it waits (a scrape would push the worker serving
it, and hide a worker that does not push on its own)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.adapters.servers import Server

pytestmark = pytest.mark.slow

CLIENTS, REQUESTS = 12, 5  # each client: one request creating its session, then four more
TOTAL = CLIENTS * REQUESTS
WORKERS = 3
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
COUNT = "sessionkeeper_store_operation_duration_seconds_count"


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def factory(push_s: float, kind: str = "metrics") -> Server:
        """``kind``: a command of tests/adapters/servers.py."""
        (tmp_path / "prom").mkdir(exist_ok=True)  # uvicorn has no config to make it
        env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"), "METRICS_PUSH_S": str(push_s)}
        store = f"sqlite:///{tmp_path / 'sessions.db'}"
        s = Server(kind, WORKERS, store, tmp_path / "server.log", env)
        started.append(s)
        s.wait_ready()
        every_worker_answers(s.url)
        return s

    yield factory
    for s in started:
        s.kill()


def every_worker_answers(url: str, timeout_s: float = 60.0) -> None:
    """Wait until each of the WORKERS has answered (a read-only GET, which counts nothing):
    the server answers as soon as its first worker is up, and under load the others may still
    be importing the app, so all the traffic would go to that one."""
    pids: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(pids) < WORKERS and time.monotonic() < deadline:
        with httpx.Client(base_url=url, timeout=10) as fresh:  # a new connection each time
            pids.add(fresh.get("/").json()["pid"])
    assert len(pids) == WORKERS, f"only workers {sorted(pids)} answered in {timeout_s:g} s"


def shop(url: str) -> list[int]:
    """One client's requests; the pids of the workers that served them."""
    pids, sid = [], ""
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(1, REQUESTS + 1):
            r = client.post("/incr", headers={"Cookie": f"sessionid={sid}"} if sid else {})
            assert r.status_code == 200 and r.json()["n"] == i, r.text
            sid = r.cookies.get("sessionid") or sid
            pids.append(r.json()["pid"])
    return pids


def traffic(server: Server) -> None:
    with ThreadPoolExecutor(6) as pool:
        served = {pid for pids in pool.map(shop, [server.url] * CLIENTS) for pid in pids}
    assert len(served) > 1, "all requests went to one worker: nothing to sum"


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def files(directory: Path) -> Samples:
    """What a scrape would sum, read from the workers' files without asking any of them."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return parse(generate_latest(registry).decode())


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def writes(samples: Samples) -> float:
    """Sessions written, by a request or by the flusher (which may take a session the request
    just changed before the request's own write runs: then the request has nothing to write)."""
    return sum(
        get(samples, "sessionkeeper_store_writes_total", trigger=t) for t in ("request", "flush")
    )


def check_sums(got: Samples) -> None:
    assert get(got, "sessionkeeper_sessions_created_total") == CLIENTS
    assert writes(got) == TOTAL  # end-of-request: every request's change was written
    assert get(got, "sessionkeeper_store_sessions_written_total") == TOTAL
    hits = get(got, "sessionkeeper_cache_lookups_total", result="hit")
    misses = get(got, "sessionkeeper_cache_lookups_total", result="miss")
    assert hits + misses == TOTAL - CLIENTS  # every request that presented an id
    assert get(got, "sessionkeeper_failovers_total") == misses
    assert get(got, "sessionkeeper_store_reads_total") == misses
    # The histogram sums over workers too: one save per batch, one load per miss.
    assert get(got, COUNT, op="save") == get(got, "sessionkeeper_store_write_batches_total") > 0
    assert get(got, COUNT, op="load") == misses


def wait_for_sums(directory: Path, timeout_s: float = 30.0) -> None:
    """Wait until the workers' files hold every sum (each worker pushes every 0.2 s on its
    own). Not only the writes: a push adds one counter after another, so under load a reader
    can see a worker's writes pushed and its batches or lookups not yet; once every sum holds,
    the traffic's counts are all in and a later push adds nothing."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            check_sums(files(directory))
        except AssertionError:
            time.sleep(0.1)
        else:
            return
    check_sums(files(directory))  # the deadline passed: fail with the sums' own message


@pytest.mark.parametrize("preload", [False, True], ids=["per-worker", "preload"])
def test_a_scrape_sums_every_worker(
    start: Callable[..., Server], tmp_path: Path, preload: bool
) -> None:
    """With ``--preload`` the manager is built in the master: each forked worker restarts its
    own push thread."""
    server = start(0.2, "metrics-preload" if preload else "metrics")
    traffic(server)
    wait_for_sums(tmp_path / "prom")
    got = parse(httpx.get(server.url + "/metrics", timeout=10).text)
    check_sums(got)
    assert not [k for k in got if {"pid", "node"} & dict(k[1]).keys()]  # the scrape is the node
    assert get(got, "sessionkeeper_sessions_dirty") == 0
    assert get(got, "sessionkeeper_unwritten_age_seconds") == 0
    assert get(got, "sessionkeeper_store_up") == 1
    assert CLIENTS <= get(got, "sessionkeeper_sessions_cached") <= CLIENTS * WORKERS


def test_counts_outlive_the_workers(start: Callable[..., Server], tmp_path: Path) -> None:
    """No push thread to speak of (one an hour): what the workers counted reaches the files
    through ``worker_exit``, and stays there after they are gone; their gauges do not."""
    server = start(3600)
    traffic(server)
    os.kill(server.proc.pid, signal.SIGTERM)  # the master this test started: a graceful stop
    server.proc.wait(timeout=30)
    after = files(tmp_path / "prom")
    check_sums(after)
    # Gauges count live workers only: child_exit marked every one of these dead.
    assert get(after, "sessionkeeper_sessions_cached") == 0


def test_uvicorn_workers_add_up_too(start: Callable[..., Server], tmp_path: Path) -> None:
    """The ASGI form under uvicorn's workers. They have no exit hook and uvicorn ends them by
    re-raising SIGTERM (no atexit), so only the push thread carries their counts."""
    server = start(0.2, "metrics-asgi")
    traffic(server)
    wait_for_sums(tmp_path / "prom")
    check_sums(parse(httpx.get(server.url + "/metrics", timeout=10).text))
