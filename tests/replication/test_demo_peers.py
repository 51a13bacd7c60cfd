"""``sessionkeeper demo --replication``, short: three real gunicorn nodes on a private nats-server,
no database at all (each node's store is its own ``memory://``), a SIGKILL and a SIGTERM mid-run.
Its report must show nothing acknowledged lost, the backups' takeover after the crash, the
handoff at the graceful stop and two copies of every session at the end."""

from __future__ import annotations

import io

import pytest

from sessionkeeper.demo.report import table
from sessionkeeper.demo.run import DemoOptions, run_demo
from tests.replication.conftest import NatsServer

pytestmark = pytest.mark.slow


def test_the_demo_on_memory_to_memory_replication_loses_nothing_acknowledged(
    nats: NatsServer,
) -> None:
    progress = io.StringIO()
    opts = DemoOptions(nodes=3, users=4, duration_s=8, replication=nats.url)
    result, setup = run_demo(opts, out=progress)
    log, report = progress.getvalue(), table(result)
    assert "SIGKILL node-" in log and "SIGTERM node-" in log, log
    assert log.count("restarted") == 2, log
    assert "store=none" in setup and f"replication={nats.url}" in setup
    assert result.acknowledged > 50, report
    assert result.lost == 0 and result.allowed == 0 and result.ok, report
    assert result.found == result.acknowledged and result.sessions == 4, report
    peers = result.peers
    assert peers is not None and peers.healthy, report
    assert peers.counts["replication_takeovers"] >= 1, report  # the SIGKILLed owner's sessions
    assert peers.counts["replication_handoffs_received"] >= 1, report  # the SIGTERMed one's
    assert peers.owned == 4 and peers.copies_per_session == 2.0, report
    assert peers.messages >= result.acknowledged, report  # every acknowledged add was copied
    for row in ("copies per session", "handoffs", "takeovers", "updates on the nodes"):
        assert row in report, report
    assert "store writes" not in report, report  # there is no store
