"""``sessionkeeper replication-health`` and ``health_app``: another process asks a running
cluster, over NATS, whether every session has its replicas. Real node processes on a private
nats-server, real signals: healthy, unhealthy once a backup is SIGKILLed, healthy again (after
``--wait``) once a new node joined and took the copies, 503 once the last backup is gone."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sessionkeeper as sk
from sessionkeeper.replication.health import health_app
from tests.replication.conftest import NatsServer, wait_until
from tests.replication.health_node import KEY

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}


class Nodes:
    def __init__(self, url: str) -> None:
        self.url = url
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str, sessions: int = 0) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.replication.health_node", self.url, name, str(sessions)],
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        self.procs[name] = proc
        assert proc.stdout is not None

    def ready(self, name: str) -> None:
        proc = self.procs[name]
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        assert proc.wait(20) in (0, -sig)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(10)


@pytest.fixture
def nodes(nats: NatsServer) -> Iterator[Nodes]:
    n = Nodes(nats.url)
    yield n
    n.stop_all()


def cli(url: str, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sessionkeeper.cli",
            "replication-health",
            url,
            "--cluster",
            "t",
            *args,
        ],
        capture_output=True,
        text=True,
        env={**ENV, "SESSIONKEEPER_REPLICATION_KEY": key},
        timeout=120,
    )


def wsgi_get(app: Any, query: str = "") -> tuple[str, dict[str, Any]]:
    seen: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "QUERY_STRING": query}
    body = b"".join(app(environ, lambda status, headers: seen.append(status)))
    return seen[0], json.loads(body)


def asgi_get(app: Any, query: str = "") -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "query_string": query.encode()}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_a_rolling_restart_waits_on_replication_health(nats: NatsServer, nodes: Nodes) -> None:
    nodes.start("b")
    nodes.start("a", sessions=5)
    nodes.ready("a")
    nodes.ready("b")
    done = cli(nats.url, "--members", "2", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["healthy"] is True and sorted(answer["nodes"]) == ["a", "b"]
    assert answer["nodes"]["a"]["owned"] == 5 and answer["nodes"]["b"]["backups_held"] == 5

    wrong = cli(nats.url, key="not the key")  # answers fail the signature: nobody answered
    assert wrong.returncode == 1, wrong.stdout
    too_many = cli(nats.url, "--members", "3")
    assert too_many.returncode == 1 and "2 of the 3 nodes required answered" in too_many.stdout

    nodes.signal("b", signal.SIGKILL)  # a's sessions lose their only copy
    assert wait_until(lambda: cli(nats.url).returncode == 1, timeout_s=60)
    app = health_app(sk.Replication(nats.url, cluster="t", key=KEY))
    status, body = wsgi_get(app)
    assert status.startswith("503") and body["nodes"]["a"]["underreplicated"] == 5

    nodes.start("c")  # the restarted node: a copies its sessions to it (repair)
    nodes.ready("c")
    back = cli(nats.url, "--wait", "60", "--members", "2")
    assert back.returncode == 0, back.stdout + back.stderr
    status, body = wsgi_get(app, "members=2")
    assert status.startswith("200") and body["nodes"]["c"]["backups_held"] == 5
    code, body = asgi_get(health_app(sk.Replication(nats.url, cluster="t", key=KEY), asgi=True))
    assert code == 200 and sorted(body["nodes"]) == ["a", "c"]

    nodes.signal("a", signal.SIGTERM)  # handed to c, which has nobody to copy them to
    status, body = wsgi_get(app)
    assert status.startswith("503")
    assert body["nodes"]["c"]["owned"] == 5 and body["nodes"]["c"]["underreplicated"] == 5


def test_nats_unreachable_exits_3(nats: NatsServer) -> None:
    nats.stop()
    done = cli(nats.url)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "unreachable" in done.stdout
