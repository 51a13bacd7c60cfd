"""``deploy/logging.json`` under gunicorn and uvicorn: a line sessionkeeper logs reaches the
server's log with its time, level, logger name and pid, not bare (Python's last-resort handler
prints only the message when nothing configured logging)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.adapters.servers import ROOT, Server

pytestmark = pytest.mark.slow

CONFIG = str(ROOT / "deploy" / "logging.json")
OPTION = {"flask": "--log-config-json", "fastapi": "--log-config"}  # gunicorn, uvicorn
LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} WARNING sessionkeeper \[\d+\] "
    r"a session moved between nodes",
    re.MULTILINE,
)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for s in started:
        s.kill()


@pytest.mark.parametrize("framework", ["flask", "fastapi"])
def test_library_lines_carry_time_level_and_logger(
    framework: str, servers: list[Server], tmp_path: Path
) -> None:
    env = {"SESSIONKEEPER_WRITE": "time-based:10"}  # deferred: a moved session is warned about
    log = tmp_path / "server.log"
    s = Server(
        framework, 1, f"sqlite:///{tmp_path / 's.db'}", log, env, [OPTION[framework], CONFIG]
    )
    servers.append(s)
    s.wait_ready()
    with httpx.Client(base_url=s.url, timeout=10) as client:
        sid = client.post("/incr").cookies["sessionid"]
        moved = sid.rsplit(".", 1)[0] + ".elsewhere"  # as if another node had served it
        assert client.get("/", headers={"Cookie": f"sessionid={moved}"}).status_code == 200
    s.kill()
    text = log.read_text()
    assert LINE.search(text), text[-3000:]
    assert not re.search(r"^a session moved", text, re.MULTILINE)  # no bare copy
