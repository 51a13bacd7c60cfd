"""``sessionkeeper.metrics``: the exposition's names, types, labels and values, on a fake clock.
The multiprocess (gunicorn) side is tested on a real server in tests/adapters/test_metrics_gunicorn.py."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

import sessionkeeper as sk
from sessionkeeper import metrics

from .conftest import MakeManager, RecordingStore, new_session

BOUNDED_LABELS = {"reason", "result", "trigger", "outcome", "code", "op", "le"}


def scrape(exporter: metrics.Exporter) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, by name and labels."""
    text = exporter.expose()[0].decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def exporter() -> metrics.Exporter:
    return metrics.Exporter(CollectorRegistry())


def test_every_number_of_stats_is_exposed(make: MakeManager) -> None:
    """A counter added to stats() without a metric fails here."""
    numbers = {k for k, v in make().stats().items() if not isinstance(v, str)}
    exposed = {k for f in metrics.COUNTERS + metrics.GAUGES for k in f.keys}
    assert numbers - exposed - metrics.COVERED == set()
    assert exposed - numbers == set()  # and nothing exposed is missing from stats()


def test_names_types_and_labels(make: MakeManager, exporter: metrics.Exporter) -> None:
    m = make()
    exporter.add(m)
    new_session(m)
    text = exporter.expose()[0].decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for f in metrics.COUNTERS:
        assert families[metrics.PREFIX + f.name.removesuffix("_total")].type == "counter"
    for f in metrics.GAUGES:
        assert families[metrics.PREFIX + f.name].type == "gauge"
    latency = families["sessionkeeper_store_operation_duration_seconds"]
    assert latency.type == "histogram"
    for family in families.values():
        assert family.name.startswith("sessionkeeper_")
        for sample in family.samples:
            assert "node" not in sample.labels and m.node not in sample.labels.values()
            if family.name != "sessionkeeper_info":
                assert set(sample.labels) <= BOUNDED_LABELS, sample
    info = [s for s in families["sessionkeeper_info"].samples]
    assert [(s.labels["policy"], s.labels["store"], s.value) for s in info] == [
        ("end-of-request", "memory", 1.0)
    ]


def test_values_after_known_requests(
    make: MakeManager, exporter: metrics.Exporter, store: RecordingStore
) -> None:
    a, b = make(node="a"), make(node="b")
    exporter.add(a)
    exporter.add(b)
    ids = [new_session(a, n=i) for i in range(3)]  # 3 created, each written at request end
    for sid in ids:
        with a.request("shop", sid) as s:  # hit, and a write
            s["n"] += 1
    with b.request("shop", ids[0]) as s:  # names node a: an affinity break, a miss, a failover
        s["n"] += 1
    with a.request("shop", "not an id"):
        pass
    with a.request("shop", ids[1]) as s:
        s.invalidate()
    got = scrape(exporter)
    assert value(got, "sessionkeeper_sessions_created_total") == 3
    assert value(got, "sessionkeeper_cache_lookups_total", result="hit") == 4
    assert value(got, "sessionkeeper_cache_lookups_total", result="miss") == 1
    assert value(got, "sessionkeeper_failovers_total") == 1
    assert value(got, "sessionkeeper_affinity_breaks_total") == 1
    assert value(got, "sessionkeeper_store_writes_total", trigger="request") == 7
    assert value(got, "sessionkeeper_store_writes_total", trigger="flush") == 0
    assert value(got, "sessionkeeper_errors_total", code="invalid_session_id") == 1
    assert value(got, "sessionkeeper_sessions_destroyed_total", reason="invalidated") == 1
    assert value(got, "sessionkeeper_store_reads_total") == 1  # one store, shared: counted once
    assert value(got, "sessionkeeper_store_deletes_total") == 1
    # Gauges add up over the process's managers: a holds 2 live sessions, b holds 1.
    assert value(got, "sessionkeeper_sessions_cached") == 3
    assert value(got, "sessionkeeper_store_up") == 1
    # The histogram saw every store operation: one load, seven saves, one delete.
    count = "sessionkeeper_store_operation_duration_seconds_count"
    assert value(got, count, op="load") == 1
    assert value(got, count, op="save") == 7 == store.stats.write_batches
    assert value(got, count, op="delete") == 1


def test_a_scrape_adds_only_what_grew(make: MakeManager, exporter: metrics.Exporter) -> None:
    m = make()
    exporter.add(m)
    exporter.add(m)  # twice: still one set of deltas
    new_session(m)
    assert value(scrape(exporter), "sessionkeeper_sessions_created_total") == 1
    exporter.push()  # as the push thread does between scrapes
    assert value(scrape(exporter), "sessionkeeper_sessions_created_total") == 1
    new_session(m)
    assert value(scrape(exporter), "sessionkeeper_sessions_created_total") == 2


def test_unwritten_age_is_the_live_crash_window(
    make: MakeManager, exporter: metrics.Exporter, clock: sk.FakeClock
) -> None:
    m = make(write=sk.TimeBased(interval_s=10))
    exporter.add(m)
    sid = new_session(m)  # written at once (save on create)
    assert value(scrape(exporter), "sessionkeeper_unwritten_age_seconds") == 0
    clock.advance(3)
    with m.request("shop", sid) as s:
        s["k"] = 1  # not due for 7 s more: dirty
    clock.advance(4)
    got = scrape(exporter)
    assert value(got, "sessionkeeper_sessions_dirty") == 1
    # The change is 4 s old; the bound counts from the last write, 7 s ago.
    assert value(got, "sessionkeeper_unwritten_age_seconds") == 7
    assert value(got, "sessionkeeper_crash_window_seconds") == 10 + 2 * 1.0  # two flush polls
    assert value(got, "sessionkeeper_unwritten_age_seconds") <= m.policy.max_loss().seconds
    clock.advance(3)
    m.housekeep()  # due: the flusher writes it
    got = scrape(exporter)
    assert value(got, "sessionkeeper_unwritten_age_seconds") == 0
    assert value(got, "sessionkeeper_store_writes_total", trigger="flush") == 1


def test_store_down_shows(
    make: MakeManager, exporter: metrics.Exporter, store: RecordingStore
) -> None:
    m = make()
    exporter.add(m)
    store.down = True
    with pytest.raises(sk.StoreUnavailable), m.request("shop", "x" * 32 + ".a"):
        pass
    got = scrape(exporter)
    assert value(got, "sessionkeeper_store_up") == 0
    # Both attempts of the load, and both of the invalidation feed's first read before it.
    assert value(got, "sessionkeeper_store_errors_total") == 4
    assert value(got, "sessionkeeper_store_retries_total") == 2
    assert (
        value(got, "sessionkeeper_store_operation_duration_seconds_count", op="invalidations") == 2
    )
    assert value(got, "sessionkeeper_store_operation_duration_seconds_count", op="load") == 2


def test_wsgi_app(make: MakeManager, exporter: metrics.Exporter) -> None:
    app = metrics.metrics_app(make(), exporter=exporter)
    seen: list[tuple[str, list[tuple[str, str]]]] = []
    body = b"".join(app({"REQUEST_METHOD": "GET"}, lambda s, h: seen.append((s, h))))
    assert seen[0][0] == "200 OK" and b"sessionkeeper_sessions_cached 0.0" in body
    assert dict(seen[0][1])["Content-Type"].startswith("text/plain; version=")
    b"".join(app({"REQUEST_METHOD": "POST"}, lambda s, h: seen.append((s, h))))
    assert seen[1][0].startswith("405")


def test_asgi_app(make: MakeManager, exporter: metrics.Exporter) -> None:
    app = metrics.metrics_app(make(), asgi=True, exporter=exporter)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "method": "GET", "path": "/metrics"}, receive, send))
    assert sent[0]["status"] == 200
    assert b"sessionkeeper_sessions_cached 0.0" in sent[1]["body"]


def test_asgi_app_alone_answers_lifespan_and_refuses_post(
    make: MakeManager, exporter: metrics.Exporter
) -> None:
    app = metrics.metrics_app(make(), asgi=True, exporter=exporter)
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    incoming.append({"type": "http.request", "body": b""})
    asyncio.run(app({"type": "http", "method": "POST", "path": "/metrics"}, receive, send))
    assert sent[2]["status"] == 405


def test_core_does_not_import_prometheus_client() -> None:
    code = (
        "import sys, sessionkeeper, sessionkeeper.wsgi, sessionkeeper.asgi, sessionkeeper.flask, "
        "sessionkeeper.cli, sessionkeeper.metrics\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


FORKS = """
import os, sys
import sessionkeeper as sk
from sessionkeeper import metrics
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

m = sk.SessionManager(sk.MemoryStore(), node="a", housekeeping=False)
exporter = metrics.Exporter(push_interval_s=3600)
exporter.add(m)
for _ in range(3):  # counted in the parent, before any fork
    with m.request("shop") as s:
        s["k"] = 1
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        with m.request("shop") as s:
            s["k"] = 1
        metrics.push_all()
        os._exit(0)
    os.waitpid(pid, 0)
metrics.push_all()
registry = CollectorRegistry()
MultiProcessCollector(registry)
for line in generate_latest(registry).decode().splitlines():
    if line.startswith("sessionkeeper_sessions_created_total"):
        print(line.split()[-1])
"""


def test_counts_made_before_a_fork_are_counted_once(tmp_path: Path) -> None:
    """A forked child inherits its parent's counts: it must push only what it counts itself
    (gunicorn --preload forks workers from a master that built the manager)."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", FORKS], env=env, check=True, capture_output=True, text=True
    ).stdout
    assert float(out) == 3 + 1 + 1


EXIT = """
import sessionkeeper as sk
from sessionkeeper import metrics

m = sk.SessionManager(sk.MemoryStore(), node="a", write="manual", housekeeping=False)
exporter = metrics.Exporter(push_interval_s=3600)
exporter.add(m)
with m.request("shop") as s:
    s["k"] = 1  # written at once (save on create)
with m.request("shop", s.id) as s:
    s["k"] = 2  # manual: written only by close()
"""


def test_a_process_that_exits_pushes_its_last_counts(tmp_path: Path) -> None:
    """At exit (servers without a worker exit hook), the managers are closed first, so their
    last flush is counted, then pushed; the process's live gauges go."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", EXIT], env=env, check=True)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in registry.collect()
        for s in f.samples
    }
    assert value(got, "sessionkeeper_sessions_created_total") == 1
    assert value(got, "sessionkeeper_store_writes_total", trigger="flush") == 1
    assert not list(tmp_path.glob("gauge_live*"))
