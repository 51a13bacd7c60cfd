"""The README's quick start, run as a new user would: the code block copied as it stands, under
a real `gunicorn -w 4` on one port (no sticky routing), one browser's cookie jar. Every request
sees the previous one's count, whichever worker serves it (issue 10: the snippet used to count
`1 2 2 2 3 3 3 4 5 4 3 4`)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sessionkeeper.demo.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 24


def quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "the README's quick start has no python block"
    return match.group(1)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not start:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_the_quick_start_counts_without_a_gap_under_gunicorn_w_4(tmp_path: Path) -> None:
    (tmp_path / "quickstart.py").write_text(quick_start())
    port = free_port()
    log = tmp_path / "gunicorn.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(tmp_path)])}
    cmd = [str(Path(sys.executable).parent / "gunicorn"), "-w", "4", "-b", f"127.0.0.1:{port}"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*cmd, "quickstart:application"], cwd=tmp_path, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_ready(url, proc, log)
        with httpx.Client(timeout=10) as browser:
            counts = [browser.get(url).text.strip() for _ in range(REQUESTS)]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this test started
        proc.wait(timeout=30)
    assert counts == [f"visits: {n}" for n in range(1, REQUESTS + 1)]
