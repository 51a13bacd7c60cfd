"""The chaos run, shortened: 2 nodes on a private PostgreSQL behind nginx, 3 shoppers, one
SIGKILL, one SIGTERM, a PostgreSQL restart and a 4 s cut-off, under end-of-request and
time-based:2 (about 40 s). ``make chaos`` runs the full one and writes docs/chaos.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.chaos.__main__ import run_all
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
