"""Issue 14 on real nodes: two gunicorn nodes (``a`` and ``b``, one store) on SQLite, PostgreSQL,
MariaDB and Redis. A logout or a login on ``a`` ends the old id on ``b`` even when the client
rewrites the suffix to name ``b`` (which trusts its cached copy), within the feed's bound; and
the stale copy never writes the session back. Each test prints how long ``b`` took
(``pytest -s`` shows the figures)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionkeeper.demo.cluster import listening_socket
from sessionkeeper.stores import open_store
from tests.services import unique_name

from .conftest import FIXTURE_OF, drop

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
#: What a node may take (docs/security.md): a poll (flush_poll_s = 1 s) plus the read; the
#: freshness bound (2 x flush_poll_s + the store's 3 s timeout) is the most it may ever take.
BOUND_S = 2 * 1.0 + 3.0


class Node:
    def __init__(self, name: str, url: str, options: dict[str, Any], log: Path) -> None:
        # Bound here and passed to gunicorn: no other process can take the port meanwhile (a
        # port from free_port was twice taken before its node bound it: "Address already in use").
        sock = listening_socket()
        self.name, self.port = name, sock.getsockname()[1]
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
            "SESSIONKEEPER_STORE": url,
            "SESSIONKEEPER_NODE": name,
            "SESSIONKEEPER_STORE_OPTIONS": json.dumps(options),
        }
        cmd = [sys.executable, "-m", "gunicorn", "-w", "1", "--threads", "4"]
        cmd += ["-b", f"fd://{sock.fileno()}", "tests.servers.feed_app:application"]
        self._log = log.open("wb")
        with sock:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                start_new_session=True, pass_fds=[sock.fileno()],
            )  # fmt: skip
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        self.log_path = log

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if self.client.get("/healthz").json()["node"] == self.name:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"node {self.name} did not start:\n{self.log_path.read_text()[-3000:]}")

    def call(self, method: str, path: str, sid: str | None) -> tuple[dict[str, Any], str | None]:
        """One request with ``sid``'s token and this node's suffix; the session's contents and
        the id the response set (``None`` if it set none)."""
        cookies = {"sessionid": f"{sid.partition('.')[0]}.{self.name}"} if sid else {}
        r = self.client.request(method, path, headers=_cookie_header(cookies))
        assert r.status_code == 200, r.text
        return r.json()["session"], r.cookies.get("sessionid")

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group this test started
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


def _cookie_header(cookies: dict[str, str]) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())} if cookies else {}


STORES = ("sqlite", "postgresql", "mysql", "redis")


@pytest.fixture(params=STORES)
def nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Node, Node, Any]]:
    kind: str = request.param
    if kind == "sqlite":
        url, options = f"sqlite:///{tmp_path / 'sessions.db'}", {}
    else:
        url = request.getfixturevalue(FIXTURE_OF[kind])
        prefix = "key_prefix" if kind == "redis" else "table_prefix"
        options = {prefix: unique_name("skfeed") + (":" if kind == "redis" else "")}
    store = open_store(url, **options)
    if kind != "redis":
        store.init_schema()  # type: ignore[attr-defined]
    a, b = (Node(n, url, options, tmp_path / f"{n}.log") for n in ("a", "b"))
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b, store
    finally:
        a.close()
        b.close()
        store.close()
        if kind != "sqlite":
            drop(kind, url, options)


def until_ended(b: Node, sid: str, key: str) -> float:
    """Poll ``b`` with ``sid`` (its suffix) until ``key`` is gone; seconds it took."""
    started = time.monotonic()
    while key in b.call("GET", "/whoami", sid)[0]:
        assert time.monotonic() - started < BOUND_S, f"still served after {BOUND_S} s"
        time.sleep(0.02)
    return time.monotonic() - started


def cached_on_b(a: Node, b: Node, path: str, key: str) -> str:
    session, sid = a.call("POST", path, None)
    assert sid is not None and key in session
    for _ in range(2):  # a failover, then a cache hit
        assert key in b.call("GET", "/whoami", sid)[0]
    return sid


def test_logout_on_a_ends_the_id_on_b(nodes: tuple[Node, Node, Any], request: Any) -> None:
    a, b, _ = nodes
    sid = cached_on_b(a, b, "/login?user=ann", "user")
    a.call("POST", "/logout", sid)
    print(
        f"\nFEED {request.node.callspec.id} logout reached b in {until_ended(b, sid, 'user'):.3f} s"
    )


def test_login_on_a_ends_the_pre_login_id_on_b(nodes: tuple[Node, Node, Any], request: Any) -> None:
    a, b, _ = nodes
    sid = cached_on_b(a, b, "/set?cart=fig", "cart")
    _, new = a.call("POST", "/login?user=ann", sid)
    assert new is not None and new.partition(".")[0] != sid.partition(".")[0]
    print(
        f"\nFEED {request.node.callspec.id} login reached b in {until_ended(b, sid, 'cart'):.3f} s"
    )
    assert b.call("GET", "/whoami", new)[0] == {"cart": "fig", "user": "ann"}


def test_a_stale_copy_never_writes_a_logged_out_session_back(
    nodes: tuple[Node, Node, Any],
) -> None:
    a, b, store = nodes
    sid = cached_on_b(a, b, "/login?user=ann", "user")
    token = sid.partition(".")[0]
    a.call("POST", "/logout", sid)
    until_ended(b, sid, "user")
    session, new = b.call("POST", "/set?cart=fig", sid)  # a write through b with the old id
    assert session == {"cart": "fig"} and new is not None and not new.startswith(token)
    assert store.load("shop", token) is None
    assert "user" not in a.call("GET", "/whoami", sid)[0]
