"""Smoke test of ``make bench``: ``python -m bench --quick`` runs every section and exits 0.

The quick run skips, with a printed reason, the contenders whose server or package is missing
(the peers come from bench/requirements.txt, which only ``make bench`` installs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADERS = [
    "WSGI middleware: in-process cost per request",
    "Frameworks: in-process cost per request",
    "Store writes per write policy",
    "Memory per cached session",
    "Replication: cost per changed request",
    "EndOfRequest at the store's floor",
]


@pytest.mark.slow
def test_quick_bench_runs_every_section() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for header in HEADERS:
        assert f"{header}\n{'=' * len(header)}\n" in proc.stdout, header
    for framework in ("bare WSGI", "Flask", "Django", "Starlette"):
        assert f"{framework}: contender" in proc.stdout, framework
    assert "PASS" in proc.stdout or "FAIL" in proc.stdout
    assert "Traceback" not in proc.stdout
