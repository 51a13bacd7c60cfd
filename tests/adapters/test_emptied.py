"""Logout by emptying the session (``clear()``, or popping the last key), through each adapter's
real middleware: the WSGI and ASGI ones end the session as ``invalidate()`` does (the cookie
deleted, the id tombstoned and never reused); Django keeps its own rule (an emptied session keeps
its key and is saved empty; ``flush()`` ends it). Flask: ``test_flask.py::test_clear_logout_and_login``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.test import Client, override_settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import sessionkeeper as sk
import tests.adapters.test_django as dj  # configures Django, and holds the views' URLconf
from sessionkeeper import asgi, wsgi
from sessionkeeper import django as skd
from tests.core.wsgi_util import call, environ


@pytest.fixture
def manager() -> Iterator[sk.SessionManager]:
    m = sk.SessionManager("memory://", node="a", housekeeping=False, clock=sk.FakeClock())
    yield m
    m.close()


def token(session_id: str) -> str:
    return session_id.split(".")[0]


@pytest.mark.parametrize("how", ["clear", "pop"])
def test_wsgi_logout_by_emptying_deletes_the_cookie_and_retires_the_id(
    manager: sk.SessionManager, how: str
) -> None:
    def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
        s = env["sessionkeeper.session"]
        if env["PATH_INFO"] == "/login":
            s["user"] = "alice"
        elif how == "clear":
            s.clear()
        else:
            s.pop("user")
        start_response("200 OK", [])
        return [b""]

    mw = wsgi.SessionMiddleware(app, manager, "shop")
    sid = call(mw, environ("/login")).session_id
    assert sid is not None
    out = call(mw, environ("/logout", cookie=f"sessionid={sid}"))
    assert out.cookie is not None and "Max-Age=0" in out.cookie and out.session_id is None
    assert out.header("Vary") == ["Cookie"]
    assert manager.store.load("shop", token(sid)) is None
    again = call(mw, environ("/login", cookie=f"sessionid={sid}")).session_id
    assert again is not None and token(again) != token(sid)  # never reused


@pytest.mark.anyio
async def test_asgi_logout_by_clear_deletes_the_cookie_and_retires_the_id(
    manager: sk.SessionManager,
) -> None:
    async def login(request: Request) -> Response:
        request.session["user"] = "alice"
        return PlainTextResponse("hi")

    async def logout(request: Request) -> Response:
        request.session.clear()
        return PlainTextResponse("bye")

    app = Starlette(routes=[Route("/login", login), Route("/logout", logout)])
    app.add_middleware(asgi.SessionMiddleware, manager=manager, app_name="shop")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        sid = (await c.get("/login")).cookies["sessionid"]
        r = await c.get("/logout")
        assert "Max-Age=0" in r.headers["set-cookie"] and r.headers["vary"] == "Cookie"
        assert manager.store.load("shop", token(sid)) is None
        c.cookies.set("sessionid", sid)
        again = (await c.get("/login")).cookies["sessionid"]
        assert token(again) != token(sid)


@pytest.mark.parametrize("middleware", ["ours", "django's"])
def test_django_keeps_an_emptied_session_and_its_key_and_flush_ends_it(middleware: str) -> None:
    mw = dj_middleware(middleware)
    with override_settings(SESSIONKEEPER=dj.config(), MIDDLEWARE=mw):
        c = Client()
        c.post("/incr")
        sid = c.cookies["sessionid"].value
        s = skd.SessionStore(sid)
        s.clear()
        s.save()  # Django's rule: saved empty, under its key
        row = skd.get_manager().store.load("default", token(sid))
        assert row is not None and row.attributes == {}
        assert c.get("/read").json() == {"n": None, "key": sid}
        r = c.post("/logout")
        assert r.cookies["sessionid"]["max-age"] == 0
        assert skd.get_manager().store.load("default", token(sid)) is None


def dj_middleware(which: str) -> list[str]:
    first = (
        "sessionkeeper.django.SessionMiddleware"
        if which == "ours"
        else "django.contrib.sessions.middleware.SessionMiddleware"
    )
    return [first, "sessionkeeper.django.SessionUnavailableMiddleware"]
