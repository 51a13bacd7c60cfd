"""``deploy/logging.json`` under gunicorn and uvicorn: a line sessionkeeper logs reaches the
server's log with its time, level, logger name and pid, not bare (Python's last-resort handler
prints only the message when nothing configured logging)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sessionkeeper.logs import session_hash
from tests.adapters.servers import ROOT, Server

pytestmark = pytest.mark.slow

CONFIG = str(ROOT / "deploy" / "logging.json")
OPTION = {"flask": "--log-config-json", "fastapi": "--log-config"}  # gunicorn, uvicorn
APP = {"flask": "flask-example", "fastapi": "fastapi-example"}
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


@pytest.mark.parametrize("framework", ["flask", "fastapi"])
def test_a_line_about_a_session_names_its_hash_node_and_code_never_its_id(
    framework: str, servers: list[Server], tmp_path: Path
) -> None:
    """Issue 13: a corrupt session's line ends with the node, the session's short hash and the
    error's code; the server's own lines format too (no session, no code; the master, which
    built no manager, has no node)."""
    db, log = tmp_path / "s.db", tmp_path / "server.log"
    env = {"SESSIONKEEPER_NODE": "web1"}
    s = Server(framework, 1, f"sqlite:///{db}", log, env, [OPTION[framework], CONFIG])
    servers.append(s)
    s.wait_ready()
    with httpx.Client(base_url=s.url, timeout=10) as client:
        sid = client.post("/incr").cookies["sessionid"]
        token = sid.split(".")[0]
        with sqlite3.connect(db) as conn:  # as a bad disk or a bad deploy leaves a row
            conn.execute(
                "UPDATE sessionkeeper_attributes SET value = ? WHERE token = ?",
                (b"{not json", token),
            )
        assert (
            client.get("/", headers={"Cookie": f"sessionid={token}.elsewhere"}).status_code == 200
        )
    s.kill()
    text = log.read_text()
    line = re.search(r"^.* ERROR sessionkeeper \[\d+\] session .*$", text, re.MULTILINE)
    assert line, text[-3000:]
    h = session_hash(APP[framework], token)
    assert line.group(0).endswith(f" node=web1 session={h} code=corrupt_session_data"), line
    assert token[:8] not in text
    assert re.search(
        r"^\S+ INFO (gunicorn|uvicorn)\.error .* node=\S+ session=- code=-$", text, re.MULTILINE
    ), text[-3000:]
