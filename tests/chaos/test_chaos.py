"""The chaos run, shortened: 2 nodes on a private PostgreSQL behind nginx, 3 shoppers, one
SIGKILL, one SIGTERM, a PostgreSQL restart and a 4 s cut-off, under end-of-request and
time-based:2 (about 40 s). ``make chaos`` runs the full one and writes docs/chaos.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.chaos.__main__ import run_all, run_peers_all
from tools.chaos.peer_verdict import peer_failed_checks, peer_text_table
from tools.chaos.peers import SHORT_PEERS
from tools.chaos.scenario import SHORT, ChaosOptions
from tools.chaos.verdict import failed_checks, text_table


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_chaos_short(nginx_bin: str, postgres_bin_dir: Path, tmp_path: Path) -> None:
    opts = ChaosOptions(
        nodes=2, users=3, policies=("end-of-request", "time-based:2"), timeline=SHORT
    )
    runs, figs = run_all(opts, tmp_path)
    table = text_table(figs)
    assert failed_checks(figs) == [], table
    eor, timed = figs
    for run, f in zip(runs, figs, strict=True):
        assert run.crash is not None and run.terminated not in (None, run.crash.node), table
        assert {w.kind for w in run.windows} == {"kill", "term", "pg-restart", "cutoff"}, table
        assert f.acknowledged > 100, table
        assert f.lost_terminated == 0 and f.lost_other == 0, table
    assert eor.lost == 0, table
    # The trade the policies make: time-based writes far less often, and a crash may cost it.
    assert timed.writes < eor.writes / 5, table
    assert timed.staleness_max_outside_outage_s <= 2 + 2 + 1, table


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_chaos_replication_short(
    nginx_bin: str, nats_bin: str, postgres_bin_dir: Path, tmp_path: Path
) -> None:
    """The replication scenario, shortened: 3 nodes with one backup per session (``ack="sync"``),
    no database (``memory``) and ``time-based:60`` on PostgreSQL (``tiered``); a SIGKILL, a
    SIGTERM and a NATS restart. The verdict is the configuration's ``max_loss()``: nothing."""
    opts = ChaosOptions(nodes=3, users=3)
    runs, figs = run_peers_all(opts, ("memory", "tiered"), SHORT_PEERS, tmp_path)
    table = peer_text_table(figs)
    assert peer_failed_checks(figs) == [], table
    for run, f in zip(runs, figs, strict=True):
        assert run.crash is not None and run.terminated not in (None, run.crash.node), table
        assert {w.kind for w in run.windows} == {"kill", "term", "nats"}, table
        assert f.acknowledged > 100 and f.lost == 0 and f.allowed == 0, table
        assert f.takeovers > 0 and f.handoffs > 0, table
    memory, tiered = figs
    assert memory.writes == 0 and memory.store == "none", table
    # The database sees a small fraction of the changes; replication carries every one.
    assert tiered.writes < tiered.changed / 5 <= tiered.messages, table
