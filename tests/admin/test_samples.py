"""The overview's samples: the store's counts, the nodes' counters scraped from /metrics, the
rates drawn, and the CLI's refusal to start without credentials."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

import sessionkeeper as sk
from sessionkeeper.admin.samples import Sample, parse_counters, series, svg_chart
from sessionkeeper.cli import EXIT_USAGE, build_parser, main
from sessionkeeper.stores import AppCounts

from .helpers import create, login

EXPOSITION = """# HELP sessionkeeper_store_writes_total Sessions written
# TYPE sessionkeeper_store_writes_total counter
sessionkeeper_store_writes_total{trigger="request"} %d
sessionkeeper_store_writes_total{trigger="flush"} 5.0
sessionkeeper_failovers_total 2.0
sessionkeeper_store_writes_created 1.7e9
"""


@pytest.fixture
def node_metrics() -> Iterator[tuple[str, list[int]]]:
    """A loopback server answering an exposition whose request-writes counter is ``box[0]``."""
    box = [10]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (EXPOSITION % box[0]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/metrics", box
    server.shutdown()
    server.server_close()


def test_parse_counters_sums_label_sets() -> None:
    totals = parse_counters(EXPOSITION % 10, ["sessionkeeper_store_writes_total", "nope"])
    assert totals == {"sessionkeeper_store_writes_total": 15.0, "nope": 0.0}


def test_series_turns_counters_into_rates_and_a_reset_into_zero() -> None:
    def s(at: float, writes: float | None) -> Sample:
        return Sample(at, {"shop": AppCounts(3, 0)}, writes, 0.0, 1)

    samples = [s(0, 10), s(10, 30), s(20, 5), s(30, None)]
    assert series(samples, "writes") == [(10, 2.0), (20, 0.0)]
    assert series(samples, "sessions") == [(0, 3.0), (10, 3.0), (20, 3.0), (30, 3.0)]
    assert "<polyline" in svg_chart(series(samples, "writes"), "w", "/s")


def test_overview_charts_the_nodes_counters(
    make_console: Any,
    manager: sk.SessionManager,
    clock: sk.FakeClock,
    node_metrics: tuple[str, list[int]],
) -> None:
    url, box = node_metrics
    console = make_console(metrics_urls=[url, "http://127.0.0.1:9/metrics"])
    client = Client(console)
    create(manager, "alice")
    login(client)
    client.get("/")
    clock.advance(10)
    client.get("/")
    clock.advance(10)
    box[0] = 60  # 50 more writes in 10 s
    html = client.get("/").get_data(as_text=True)
    assert "1 answered last time" in html
    assert "store writes (nodes)" in html and "max 5 /s, last 5 /s" in html
    assert console.sampler.samples()[-1].failovers == 2.0


def test_cli_refuses_to_start_without_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("PASSWORD", "PASSWORD_FILE", "TOKEN", "TOKEN_FILE"):
        monkeypatch.delenv(f"SESSIONKEEPER_ADMIN_{name}", raising=False)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert main(["init-db", url]) == 0
    assert main(["admin", url, "--port", "0"]) == EXIT_USAGE
    assert "no default" in capsys.readouterr().err
    args = build_parser().parse_args(["admin", url])
    assert (args.host, args.port) == ("127.0.0.1", 8900)


def test_views_sampling_often_do_not_crowd_the_chart(store: Any, clock: sk.FakeClock) -> None:
    from sessionkeeper.admin.samples import Sampler

    sampler = Sampler(store, clock, interval_s=10)
    for step in (0, 1, 1, 3, 1):  # at 0, 1, 2, 5, 6 s
        clock.advance(step)
        assert sampler.sample().at == clock.time()  # each view gets fresh counts
    assert [s.at - sampler.samples()[0].at for s in sampler.samples()] == [0, 5]
