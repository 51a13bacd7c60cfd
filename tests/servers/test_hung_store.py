"""A hung store never hangs a request: a PostgreSQL, MariaDB or Redis of the test's own is frozen
with SIGSTOP (it keeps its sockets and answers nothing, as a hung host or a network cut would).

A store call then gives up with ``StoreUnavailable`` within its bound (``timeout_s`` per wait,
``RetryPolicy.attempts`` attempts), and the next call after SIGCONT succeeds. Through the WSGI
middleware, a cached session keeps being served (its due write fails within the bound and is
kept), an uncached one gets 503 within the bound, and once the server answers again every
acknowledged change is written.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

import sessionkeeper as sk
from sessionkeeper.errors import StoreUnavailable
from sessionkeeper.stores import RetryPolicy, open_store
from sessionkeeper.wsgi import SessionMiddleware
from tests.core.wsgi_util import call, environ
from tests.services import unique_name
from tests.stores.contract import req, tok

from .conftest import SERVERS
from .instances import Instance, own_instance
from .test_outage_on_servers import counter_app

TIMEOUT_S = 0.5
ATTEMPTS = 2
#: A correctness bound, not a speed target. One attempt is at most a ping of a pooled connection
#: plus a new connection (libpq's connect timeout is at least 2 s) plus a statement: about
#: 3 s x 2 attempts on PostgreSQL. Three times that; the hang it guards against was unbounded.
BOUND_S = 3 * ATTEMPTS * (TIMEOUT_S + max(2.0, TIMEOUT_S) + TIMEOUT_S)


def options(kind: str) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "timeout_s": TIMEOUT_S,
        "retry": RetryPolicy(attempts=ATTEMPTS, backoff_s=0.01),
    }
    if kind == "redis":
        opts["key_prefix"] = unique_name("skhung") + ":"
    else:
        opts["table_prefix"] = unique_name("skhung")
    return opts


def timed(fn: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


def refused_within_bound(fn: Any) -> float:
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        fn()
    elapsed = time.monotonic() - started
    assert elapsed < BOUND_S, f"{elapsed:.1f} s"
    return elapsed


@pytest.mark.slow
@pytest.mark.parametrize("kind", SERVERS)
def test_frozen_server_is_unavailable_within_the_bound(kind: str) -> None:
    instance = own_instance(kind)
    store = open_store(instance.url, **options(kind))
    try:
        store.save_many([req(tok(1), 0, {"a": b"1"})])  # a pooled connection, the schema made
        instance.freeze()
        # Through the pooled connection, then through a new one (a frozen server still accepts).
        refused_within_bound(lambda: store.load("shop", tok(1)))
        refused_within_bound(lambda: store.load("shop", tok(1)))
        assert store.stats.available is False
        instance.thaw()
        loaded = store.load("shop", tok(1))
        assert loaded is not None and loaded.attributes == {"a": b"1"}
        assert store.stats.available is True
    finally:
        store.close()
        instance.close()


def _request(app: Any, sid: str) -> tuple[Any, float]:
    return timed(lambda: call(app, environ(cookie=f"sessionid={sid}")))


@pytest.mark.slow
@pytest.mark.parametrize("kind", SERVERS)
def test_frozen_server_under_wsgi(kind: str) -> None:
    instance = own_instance(kind)
    managers: list[sk.SessionManager] = []
    try:
        clock = sk.FakeClock()
        opts = options(kind)

        def node(name: str) -> sk.SessionManager:
            m = sk.SessionManager(
                instance.url,
                node=name,
                write=sk.TimeBased(interval_s=60),
                clock=clock,
                housekeeping=False,
                retry_after_s=3,
                store_options=opts,
            )
            managers.append(m)
            return m

        a, b = node("a"), node("b")
        app_a = SessionMiddleware(counter_app, a, "shop")
        app_b = SessionMiddleware(counter_app, b, "shop")
        cached = call(app_a, environ("/cached")).session_id
        uncached = call(app_b, environ("/elsewhere")).session_id  # stored by b only
        assert cached and uncached
        assert a.stats()["dirty"] == 0 and b.stats()["dirty"] == 0  # both stored

        _frozen_requests(instance, app_a, cached, uncached, clock)

        assert a.flush() == 1  # the kept change, written once the server answers
        check = node("check")
        stored = check.store.load("shop", cached.split(".")[0])
        assert stored is not None and json.loads(stored.attributes["n"]) == 3
        again = call(app_a, environ(cookie=f"sessionid={uncached}"))
        assert again.status == 200 and again.body == b"2"
    finally:
        for m in managers:
            m.close(deadline_s=0)
        instance.close()


def _frozen_requests(
    instance: Instance, app: Any, cached: str, uncached: str, clock: sk.FakeClock
) -> None:
    """While frozen: the cached session is served (twice: the second with its write due, which
    fails within the bound and is kept), the uncached one refused with 503; then thawed."""
    instance.freeze()
    try:
        resp, elapsed = _request(app, cached)
        assert resp.status == 200 and resp.body == b"2" and elapsed < BOUND_S
        clock.advance(61)
        resp, elapsed = _request(app, cached)
        assert resp.status == 200 and resp.body == b"3" and elapsed < BOUND_S, elapsed
        resp, elapsed = _request(app, uncached)
        assert resp.status == 503 and resp.header("Retry-After") == ["3"], resp.body
        assert elapsed < BOUND_S, elapsed
    finally:
        instance.thaw()
