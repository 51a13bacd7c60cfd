"""The demo itself, in a short form: real gunicorn nodes, a SIGKILL and a SIGTERM mid-run."""

from __future__ import annotations

import io

import pytest

from sessionkeeper.demo.run import DemoOptions, run_demo

pytestmark = pytest.mark.slow


def test_short_demo_loses_nothing_under_end_of_request() -> None:
    progress = io.StringIO()
    result, setup = run_demo(DemoOptions(nodes=2, users=3, duration_s=6), out=progress)
    log = progress.getvalue()
    assert "SIGKILL node-" in log and "SIGTERM node-" in log, log
    assert log.count("restarted") == 2, log
    assert result.acknowledged > 50
    assert result.lost == 0 and result.allowed == 0 and result.ok
    assert result.found == result.acknowledged
    assert result.failovers >= 1  # the crashed node's users were served by the other
    assert result.sessions == 3
    assert result.writes >= result.changed  # end-of-request writes every acknowledged change
    assert "write=end-of-request" in setup and "sqlite" in setup
