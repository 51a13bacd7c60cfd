"""The ASGI middleware as a drop-in for Starlette's (issue 10): its constructor names and
defaults, ``Partitioned``, and ``Vary: Cookie`` wherever the session was accessed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import sessionkeeper as sk
from sessionkeeper.asgi import SessionMiddleware

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def manager() -> Iterator[sk.SessionManager]:
    m = sk.SessionManager("memory://", node="a", housekeeping=False, clock=sk.FakeClock())
    yield m
    m.close()


def make_app(**options: Any) -> Starlette:
    async def put(request: Request) -> Response:
        request.session["n"] = 1
        return JSONResponse({"session": request.session})

    async def view(request: Request) -> Response:
        return JSONResponse({"session": request.session})

    async def untouched(request: Request) -> Response:
        return JSONResponse({})

    routes = [Route("/put", put, methods=["POST"]), Route("/view", view), Route("/none", untouched)]
    app = Starlette(routes=routes)
    app.add_middleware(SessionMiddleware, **options)
    return app


def client(app: Any, base_url: str = "http://test") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def test_vary_cookie_where_the_session_was_accessed(manager: sk.SessionManager) -> None:
    async with client(make_app(manager=manager)) as c:
        assert (await c.post("/put")).headers.get("vary") == "Cookie"
        r = await c.get("/view")
        assert "set-cookie" not in r.headers and r.headers.get("vary") == "Cookie"
        assert "vary" not in (await c.get("/none")).headers


async def test_starlettes_names_and_defaults_on_the_middlewares_own_tracking(
    manager: sk.SessionManager,
) -> None:
    app = make_app(manager=manager, secret_key="unused", same_site="none", partitioned=True)
    async with client(app, "https://test") as c:
        cookie = (await c.post("/put")).headers["set-cookie"]
        assert cookie.startswith("session=")
        assert cookie.split("; ")[1:] == [
            "path=/",
            f"Max-Age={14 * 24 * 3600}",
            "httponly",
            "samesite=none",
            "secure",
            "partitioned",
        ]
        assert (await c.get("/view")).json() == {"session": {"n": 1}}
    assert manager.tracking.cookie_name == "sessionid"  # the manager's own is unchanged


async def test_without_names_the_managers_tracking_applies(manager: sk.SessionManager) -> None:
    async with client(make_app(manager=manager)) as c:
        cookie = (await c.post("/put")).headers["set-cookie"]
    assert cookie.startswith("sessionid=") and "Path=/" in cookie and "Max-Age" not in cookie


def test_without_a_manager_max_age_is_the_idle_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default manager's SQLite file
    mw = SessionMiddleware(make_app(), secret_key="unused", max_age=3600)
    try:
        assert mw.manager.timeout_s == 3600.0
        assert mw.tracking is not None and mw.tracking.cookie_max_age_s == 3600
    finally:
        mw.manager.close()


def test_partitioned_implies_secure() -> None:
    cookie = sk.Tracking(cookie_partitioned=True).set_cookie("x.a", https=False)
    assert cookie.endswith("; Secure; Partitioned")


async def test_max_age_is_the_sessions_absolute_lifetime(manager: sk.SessionManager) -> None:
    clock = manager.clock
    assert isinstance(clock, sk.FakeClock)
    app = make_app(manager=manager, secret_key="unused", max_age=100)
    async with client(app) as c:
        await c.post("/put")
        for _ in range(3):  # read every 30 s: never idle, yet over at 100 s, as Starlette's
            clock.advance(30)
            assert (await c.get("/view")).json() == {"session": {"n": 1}}
        clock.advance(11)
        assert (await c.get("/view")).json() == {"session": {}}
