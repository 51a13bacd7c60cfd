"""Issue 14's hung store under real gunicorn: a private PostgreSQL or Redis frozen with SIGSTOP
behind a gunicorn node of two sync workers (``--timeout 20``, tighter than its default 30) with
the store's default timeouts and retries, under ``EndOfRequest``.

While frozen: a read of a session both workers hold answers 200; a change to it answers 503
(refused and rolled back: the durable policy's promise); a session no worker holds answers 503;
each within the bound, so gunicorn kills no worker. After SIGCONT every acknowledged change is in
the store and no refused one is. tests/servers/test_hung_store.py checks the same in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import sessionkeeper as sk
from sessionkeeper.demo.cluster import free_port
from sessionkeeper.wsgi import SessionMiddleware
from tests.core.wsgi_util import call, environ
from tests.services import unique_name

from .instances import Instance, _children, own_instance

ROOT = Path(__file__).resolve().parents[2]
WORKER_TIMEOUT_S = 20
#: Well under gunicorn's timeout: the default store timeout (3 s) times the default attempts (3)
#: is 9 s on Redis; a PostgreSQL attempt may add a connect.
BOUND_S = 15.0
SESSIONS = 3


class Gunicorn:
    """``feed_app`` as node ``a``: two sync workers, one port, ``--timeout 20``."""

    def __init__(self, url: str, options: dict[str, Any], log: Path) -> None:
        self.port, self.log_path = free_port(), log
        env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}",
            "SESSIONKEEPER_STORE": url,
            "SESSIONKEEPER_NODE": "a",
            "SESSIONKEEPER_STORE_OPTIONS": json.dumps(options),
        }
        cmd = [sys.executable, "-m", "gunicorn", "-w", "2", "--timeout", str(WORKER_TIMEOUT_S)]
        cmd += ["-b", f"127.0.0.1:{self.port}", "tests.servers.feed_app:application"]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        # Longer than any bound: a request outliving gunicorn's timeout shows as a killed worker.
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if self.client.get("/healthz").status_code == 200 and len(self.workers()) == 2:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not start:\n{self.log()[-3000:]}")

    def workers(self) -> set[int]:
        return set(_children(self.proc.pid))

    def request(self, method: str, path: str, sid: str | None) -> tuple[httpx.Response, float]:
        headers = {"Cookie": f"sessionid={sid}"} if sid else {}
        self.client.cookies.clear()  # only the session named here
        started = time.monotonic()
        r = self.client.request(method, path, headers=headers)
        took = time.monotonic() - started
        print(f"{method} {path} {sid and sid[:8]}: {r.status_code} in {took:.2f} s")
        return r, took

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group this test started
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def prefix_options(kind: str) -> dict[str, Any]:
    if kind == "redis":
        return {"key_prefix": unique_name("skfrz") + ":"}
    return {"table_prefix": unique_name("skfrz")}


def cached_on_both_workers(node: Gunicorn) -> tuple[str, dict[str, str]]:
    """A new session with one acknowledged change, read until each worker has served it."""
    r, _ = node.request("POST", "/set?k0=v", None)
    assert r.status_code == 200, r.text
    sid = r.cookies["sessionid"]
    seen = {r.json()["pid"]}
    for _ in range(200):
        if seen == node.workers():
            return sid, {"k0": "v"}
        r, _ = node.request("GET", "/whoami", sid)
        assert r.status_code == 200 and r.json()["session"] == {"k0": "v"}, r.text
        seen.add(r.json()["pid"])
    raise AssertionError(f"one worker never served {sid}: {seen} of {node.workers()}")


def _set_b(env: dict[str, Any], start_response: Any) -> list[bytes]:
    env["sessionkeeper.session"]["k"] = "b"
    start_response("200 OK", [])
    return []


def stored_elsewhere(url: str, options: dict[str, Any]) -> str:
    """A session node ``b`` (this process) stored: no gunicorn worker has it cached."""
    manager = sk.SessionManager(url, node="b", housekeeping=False, store_options=options)
    try:
        resp = call(SessionMiddleware(_set_b, manager, "shop"), environ("/set"))
        assert resp.status == 200 and resp.session_id
        return resp.session_id
    finally:
        manager.close(deadline_s=0)


def frozen_requests(
    instance: Instance, node: Gunicorn, cached: dict[str, dict[str, str]], uncached: str
) -> dict[str, list[float]]:
    """While frozen: each cached session read twice (200, its contents) and changed once (503,
    rolled back), the uncached one read (503); every answer within the bound. Then thawed.
    Returns the measured times by kind of request."""
    times: dict[str, list[float]] = {"cached read": [], "cached change": [], "uncached": []}
    instance.freeze()
    try:
        for sid, contents in cached.items():
            for _ in range(2):
                r, took = node.request("GET", "/whoami", sid)
                times["cached read"].append(took)
                assert r.status_code == 200 and r.json()["session"] == contents, r.text
            r, took = node.request("POST", "/set?refused=1", sid)
            times["cached change"].append(took)
            assert r.status_code == 503, r.text
            r, _ = node.request("GET", "/whoami", sid)  # no store call: the change rolled back
            assert r.status_code == 200 and r.json()["session"] == contents, r.text
        r, took = node.request("GET", "/whoami", uncached)
        times["uncached"].append(took)
        assert r.status_code == 503 and r.cookies.get("sessionid") is None, r.text
    finally:
        instance.thaw()
    return times


# Found by this test, left to the library (src/ is not this test's to change): under
# EndOfRequest (``store_failing_quietly()`` is false) a cache hit on a stale feed calls
# ``Feed.catch_up``, which waits on the feed lock while housekeeping's ``poll()`` spends every
# retry (3 x 3 s); a failed poll does not set ``_failed_mono``, so the request then reads the
# feed itself with every retry again. Measured: cached reads 10-18 s, changes 6-27 s (a 500 by
# WORKER TIMEOUT on Redis), where the in-process test's nodes (no feed poller) answer at once.
# Second, a change answered 503 ("refused, rolled back") used to be in the store after SIGCONT
# (the frozen server carried out the write it had buffered): each one-round-trip write now
# carries a deadline fence (src/sessionkeeper/stores/fence.py) and a late one does nothing.


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgresql", "redis"])
def test_frozen_store_under_gunicorn(kind: str, tmp_path: Path) -> None:
    instance = own_instance(kind)
    options = prefix_options(kind)
    node = Gunicorn(instance.url, options, tmp_path / "gunicorn.log")
    try:
        node.wait_ready()
        workers = node.workers()
        cached = dict(cached_on_both_workers(node) for _ in range(SESSIONS))
        uncached = stored_elsewhere(instance.url, options)

        times = frozen_requests(instance, node, cached, uncached)
        print(kind, {k: [round(t, 2) for t in v] for k, v in times.items()})
        slowest = max(t for v in times.values() for t in v)
        assert slowest < BOUND_S, times

        assert node.workers() == workers and "WORKER TIMEOUT" not in node.log(), node.log()
        check = sk.SessionManager(instance.url, node="check", housekeeping=False,
                                  store_options=options)  # fmt: skip
        try:
            for sid, contents in cached.items():  # every acknowledged change, no refused one
                stored = check.store.load("shop", sid.split(".")[0])
                assert stored is not None, sid
                assert {k: json.loads(v) for k, v in stored.attributes.items()} == contents
        finally:
            check.close(deadline_s=0)
        r, _ = node.request("GET", "/whoami", uncached)  # the store answers again
        assert r.status_code == 200 and r.json()["session"] == {"k": "b"}, r.text
    finally:
        node.close()
        instance.close()
