"""``python -m tools.replsizing``: what one backup copy costs in memory, and what a changed request
costs on the wire, measured on a private nats-server (the figures in docs/replication.md).

Node ``a`` (this process) owns the sessions; node ``b`` (a child process that serves nothing)
holds their backup copies. ``b``'s traced memory (``tracemalloc``) before and after ``a`` creates
``--sessions`` sessions of one ``--value-bytes`` attribute, divided by their number, is the memory
per backup copy. The NATS server's own counters (``/varz``: messages and bytes its clients
published) over a run of changed requests, minus the heartbeats of an idle period as long, give
the messages and bytes per changed request.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from typing import Any

import sessionkeeper as sk
from sessionkeeper.demo.cluster import free_port
from sessionkeeper.wsgi import ENVIRON_KEY, Environ, SessionMiddleware, StartResponse

from .chaos.nats import find_nats

# The least of a few readings after a collection: a buffer the NATS client or the membership
# handshake holds for a moment is not the backup copies' memory (one such reading made the
# difference negative on a loaded CI machine).
BACKUP = """
import gc, sys, time, tracemalloc
import sessionkeeper as sk
tracemalloc.start()
m = sk.SessionManager("memory://", node="b", replication=sk.Replication(
    sys.argv[1], cluster="sizing", heartbeat_s=0.2), cache_size=1_000_000)
m.start()
for line in sys.stdin:
    want = int(line)
    deadline = time.monotonic() + 30
    while len(m._replicator.backups) < want and time.monotonic() < deadline:
        time.sleep(0.01)
    readings = []
    for _ in range(5):
        gc.collect()
        readings.append(tracemalloc.get_traced_memory()[0])
        time.sleep(0.05)
    print(min(readings), len(m._replicator.backups), flush=True)
"""


def _wait_listening(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        time.sleep(0.02)  # waiting for a process to listen, not for time to pass
    raise SystemExit(f"nats-server did not listen on :{port}")


def _varz(port: int) -> tuple[int, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/varz", timeout=5) as resp:
        v = json.loads(resp.read())
    return int(v["in_msgs"]), int(v["in_bytes"])


class _Shop:
    def __init__(self, value: str) -> None:
        self.value = value
        self.n = 0

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        session = environ[ENVIRON_KEY]
        self.n += 1
        session["cart"] = f"{self.n:08d}" + self.value[8:]
        session["count"] = self.n
        start_response("200 OK", [])
        return [b""]


def _request(app: SessionMiddleware, cookie: str | None) -> str | None:
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> None:
        if not status.startswith("200"):
            raise RuntimeError(f"the request answered {status}")
        got.update(headers)

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "wsgi.url_scheme": "http"}
    if cookie:
        environ["HTTP_COOKIE"] = f"sessionid={cookie}"
    list(app(environ, start_response))
    set_cookie = got.get("Set-Cookie")
    return set_cookie.split(";", 1)[0].split("=", 1)[1] if set_cookie else cookie


def measure(sessions: int, value_bytes: int, updates: int) -> dict[str, float]:
    binary = find_nats()
    if binary is None:
        raise SystemExit("nats-server is not installed: run scripts/ensure-nats.sh")
    port, monitor = free_port(), free_port()
    nats = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-m", str(monitor)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"nats://127.0.0.1:{port}"
    try:
        _wait_listening(monitor)
        backup = subprocess.Popen(
            [sys.executable, "-c", BACKUP, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert backup.stdin is not None and backup.stdout is not None
        repl = sk.Replication(url, cluster="sizing", heartbeat_s=0.2)
        manager = sk.SessionManager("memory://", node="a", replication=repl, cache_size=1_000_000)
        manager.start()
        app = SessionMiddleware(_Shop("x" * value_bytes), manager, "sizing")
        members = manager._replicator.members if manager._replicator else None
        if members is None or not members.wait_for(lambda live: len(live) == 2, 30):
            raise SystemExit("the backup node did not join")

        def held(copies: int) -> tuple[int, int]:
            assert backup.stdin is not None and backup.stdout is not None
            backup.stdin.write(f"{copies}\n".encode())
            backup.stdin.flush()
            traced, held_now = backup.stdout.readline().split()
            return int(traced), int(held_now)

        before, _ = held(0)
        cookies = [_request(app, None) for _ in range(sessions)]
        after, copies = held(sessions)
        idle0 = _varz(monitor)
        started = time.monotonic()
        time.sleep(2.0)
        idle1 = _varz(monitor)
        idle_s = time.monotonic() - started
        t0, busy0 = time.monotonic(), _varz(monitor)
        for i in range(updates):
            _request(app, cookies[i % len(cookies)])
        busy1, busy_s = _varz(monitor), time.monotonic() - t0
        beats = [(idle1[k] - idle0[k]) / idle_s * busy_s for k in (0, 1)]
        handed = manager.close()
        print(f"close: {len(handed)} sessions not written (memory://: expected)", file=sys.stderr)
        backup.stdin.close()
        backup.wait(10)
        return {
            "backup_copies": copies,
            "bytes_per_backup_copy": (after - before) / max(copies, 1),
            "messages_per_changed_request": (busy1[0] - busy0[0] - beats[0]) / updates,
            "bytes_per_changed_request": (busy1[1] - busy0[1] - beats[1]) / updates,
            "heartbeat_bytes_per_s": (idle1[1] - idle0[1]) / idle_s,
        }
    finally:
        nats.terminate()
        nats.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.replsizing", description=__doc__)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--value-bytes", type=int, default=200)
    parser.add_argument("--updates", type=int, default=2000)
    args = parser.parse_args()
    figures = measure(args.sessions, args.value_bytes, args.updates)
    for key, value in figures.items():
        print(f"{key:<30} {value:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
