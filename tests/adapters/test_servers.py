"""Each example under its real server on loopback, with a SQLite store: a session outlives the
process that served it (SIGKILL), and parallel requests on one session lose no update."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.adapters.servers import Server

pytestmark = pytest.mark.slow

FRAMEWORKS = ["flask", "django", "fastapi"]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.kill()


def _post(client: httpx.Client, url: str, sid: str) -> tuple[httpx.Response, str]:
    r = client.post(url, headers={"Cookie": f"sessionid={sid}"} if sid else {})
    assert r.status_code == 200, r.text
    return r, r.cookies.get("sessionid") or sid


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_session_survives_sigkill_and_parallel_updates_are_kept(
    framework: str, servers: list[Server], tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'sessions.db'}"
    # A: two workers sharing a port (default node names, one per process); B: one worker.
    a = Server(framework, 2, store, tmp_path / "a.log", {})
    b = Server(framework, 1, store, tmp_path / "b.log", {"SESSIONKEEPER_SERIALIZE_ACCESS": "1"})
    servers += [a, b]
    a.wait_ready()
    b.wait_ready()

    with httpx.Client(base_url=a.url, timeout=10) as client:
        _, sid = _post(client, "/login?user=ann", "")
        for i in range(1, 11):
            r, sid = _post(client, "/incr", sid)
            assert r.json()["n"] == i  # whichever of A's workers served it
    a.kill()

    with httpx.Client(base_url=b.url, timeout=10) as client:
        r = client.get("/", headers={"Cookie": f"sessionid={sid}"})
        assert r.status_code == 200
        assert r.json()["n"] == 10 and r.json()["user"] == "ann"
        moved = r.cookies.get("sessionid")
        assert moved and moved != sid and moved.endswith("." + r.json()["node"])

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with httpx.Client(base_url=b.url, timeout=30) as c:
                for _ in range(25):
                    _post(c, "/incr", moved)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    r = httpx.get(b.url + "/", headers={"Cookie": f"sessionid={moved}"}, timeout=10)
    assert r.json()["n"] == 110
