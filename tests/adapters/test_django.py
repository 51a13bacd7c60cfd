"""``SESSION_ENGINE = "sessionkeeper.django"`` under Django's test client (no pytest-django).

This module configures Django and holds the views' URLconf for the other Django tests: a store
down or refusing writes (``test_django_outage``), a ``SessionStore`` outside a request
(``test_django_outside``), the cookie (``test_django_cookie``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test",
        ALLOWED_HOSTS=["testserver", "127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=["django.contrib.sessions", "sessionkeeper.django.SessionKeeperConfig"],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "sessionkeeper.django.SessionUnavailableMiddleware",
        ],
        SESSION_ENGINE="sessionkeeper.django",
        SESSIONKEEPER={"STORE": "memory://", "NODE": "a", "HOUSEKEEPING": False},
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()

from django.core import checks
from django.core.management import call_command
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import Client, override_settings
from django.urls import path

import sessionkeeper as sk
from sessionkeeper import django as skd
from sessionkeeper.stores.memory import MemoryStore


def incr(request: HttpRequest) -> HttpResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return JsonResponse({"n": request.session["n"]})


def read(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"n": request.session.get("n"), "key": request.session.session_key})


def fail(request: HttpRequest) -> HttpResponse:
    request.session["n"] = -1
    return HttpResponse("no", status=500)


def boom(request: HttpRequest) -> HttpResponse:
    request.session["n"] = -2
    raise RuntimeError("boom")


def login(request: HttpRequest) -> HttpResponse:
    request.session.cycle_key()
    return HttpResponse("hi")


def logout(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    return HttpResponse("bye")


def create(request: HttpRequest) -> HttpResponse:
    request.session.create()  # a new session: stored now (sync), an existing one: rotated
    return HttpResponse("created")


def expiry(request: HttpRequest) -> HttpResponse:
    request.session.set_expiry(int(request.GET["s"]))
    return HttpResponse("ok")


def expiry_in(request: HttpRequest) -> HttpResponse:
    request.session.set_expiry(timedelta(seconds=int(request.GET["s"])))
    return HttpResponse("ok")


def cart(request: HttpRequest) -> HttpResponse:
    request.session.setdefault("cart", []).append("apple")
    if request.GET.get("mark"):
        request.session.modified = True
    return HttpResponse("ok")


async def aincr(request: HttpRequest) -> HttpResponse:
    n = await request.session.aget("n", 0) + 1
    await request.session.aset("n", n)
    return JsonResponse({"n": n})


async def alogin(request: HttpRequest) -> HttpResponse:
    await request.session.acycle_key()
    return HttpResponse("hi")


async def alogout(request: HttpRequest) -> HttpResponse:
    await request.session.aflush()
    return HttpResponse("bye")


urlpatterns = [
    path("aincr", aincr), path("alogin", alogin), path("alogout", alogout),
    path("incr", incr), path("read", read), path("fail", fail), path("boom", boom),
    path("login", login), path("logout", logout), path("expiry", expiry), path("cart", cart),
    path("create", create), path("expiry_in", expiry_in),
]  # fmt: skip


def config(**extra: Any) -> dict[str, Any]:
    return {"STORE": MemoryStore(), "NODE": "a", "HOUSEKEEPING": False, **extra}


@pytest.fixture(autouse=True)
def fresh_manager() -> Iterator[None]:
    with override_settings(SESSIONKEEPER=config()):
        yield


def manager() -> sk.SessionManager:
    return skd.get_manager()


def stored_count() -> int:
    m = manager()
    return m.store.count("default", now=m.clock.time())


def test_round_trip_and_cookie() -> None:
    c = Client()
    r = c.post("/incr")
    assert r.json() == {"n": 1}
    morsel = r.cookies["sessionid"]
    assert morsel.value.endswith(".a") and morsel["httponly"] and morsel["samesite"] == "Lax"
    assert int(morsel["max-age"]) == settings.SESSION_COOKIE_AGE
    assert c.post("/incr").json() == {"n": 2}
    assert c.get("/read").json() == {"n": 2, "key": morsel.value}
    assert stored_count() == 1
    assert manager().timeout_s == settings.SESSION_COOKIE_AGE


def test_read_only_request_creates_nothing_and_releases() -> None:
    with override_settings(SESSIONKEEPER=config(SERIALIZE_ACCESS=True, ACCESS_WAIT_S=0.5)):
        c = Client()
        c.post("/incr")
        r = c.get("/read")
        assert "sessionid" not in r.cookies
        assert c.post("/incr").json() == {"n": 2}  # the read-only request released the session
        assert Client().get("/read").json() == {"n": None, "key": None}
        assert stored_count() == 1


@pytest.mark.parametrize("url", ["/fail", "/boom"])
def test_5xx_and_exceptions_roll_back(url: str) -> None:
    with override_settings(SESSIONKEEPER=config(SERIALIZE_ACCESS=True, ACCESS_WAIT_S=0.5)):
        c = Client(raise_request_exception=False)
        c.post("/incr")
        assert c.post(url).status_code == 500
        assert c.get("/read").json()["n"] == 1
        assert manager().stats()["reverted_requests"] == 1


def test_expire_at_browser_close_and_set_expiry() -> None:
    with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=True):
        r = Client().post("/incr")
        assert not r.cookies["sessionid"]["max-age"]
    c = Client()
    c.post("/incr")
    r = c.post("/expiry?s=120")
    assert int(r.cookies["sessionid"]["max-age"]) == 120
    token = r.cookies["sessionid"].value.split(".")[0]
    stored = manager().store.load("default", token)
    assert stored is not None and stored.timeout_s == 120


def test_set_expiry_in_the_past_ends_the_session_now() -> None:
    c = Client()
    first = c.post("/incr").cookies["sessionid"].value
    c.post("/expiry?s=-10")
    assert manager().store.load("default", first.split(".")[0]) is None
    assert not skd.SessionStore(first).exists(first)
    assert c.post("/incr").json() == {"n": 1}


def test_set_expiry_of_a_timedelta_is_an_absolute_deadline_reads_do_not_renew() -> None:
    clock = sk.FakeClock(time.time())  # Django computes the deadline from the real time
    with override_settings(SESSIONKEEPER=config(CLOCK=clock)):
        c = Client()
        c.post("/incr")
        r = c.post("/expiry_in?s=120")
        assert 110 <= int(r.cookies["sessionid"]["max-age"]) <= 120
        token = r.cookies["sessionid"].value.split(".")[0]
        stored = manager().store.load("default", token)
        assert stored is not None and stored.absolute_expires_at is not None
        assert abs(stored.absolute_expires_at - (clock.time() + 120)) < 10
        assert stored.timeout_s == manager().timeout_for("default")  # not an idle timeout
        for _ in range(3):
            clock.advance(30)
            assert c.get("/read").json()["n"] == 1
        clock.advance(40)  # 130 s: past the deadline, though read 40 s ago
        assert c.get("/read").json()["n"] is None


def test_expiry_age_and_date_follow_the_apps_max_lifetime() -> None:
    clock = sk.FakeClock(time.time())
    with override_settings(SESSIONKEEPER=config(CLOCK=clock, MAX_LIFETIME_S=600)):
        c = Client()
        r = c.post("/incr")
        assert 590 <= int(r.cookies["sessionid"]["max-age"]) <= 600
        s = skd.SessionStore(r.cookies["sessionid"].value)
        assert s.get_expiry_age() <= 600
        assert abs(s.get_expiry_date().timestamp() - (clock.time() + 600)) < 10


def test_login_cycles_key_and_logout_flushes() -> None:
    c = Client()
    c.post("/incr")
    first = c.cookies["sessionid"].value
    c.post("/login")
    second = c.cookies["sessionid"].value
    assert second != first
    assert c.get("/read").json()["n"] == 1
    assert not manager().lifecycle.exists("default", first)
    r = c.post("/logout")
    assert r.cookies["sessionid"].value == "" and r.cookies["sessionid"]["max-age"] == 0
    assert not manager().lifecycle.exists("default", second)
    assert stored_count() == 0


@pytest.mark.parametrize("contents,mark,expected", [
    ("updated", False, ["apple"]), ("updated", True, ["apple", "apple"]),
    ("accessed", False, ["apple", "apple"]),
])  # fmt: skip
def test_nested_mutation(contents: str, mark: bool, expected: list[str]) -> None:
    store = MemoryStore()
    with override_settings(SESSIONKEEPER=config(STORE=store, CONTENTS=contents)):
        c = Client()
        c.post("/cart")
        c.post("/cart?mark=1" if mark else "/cart")
        b = sk.SessionManager(store, node="b", housekeeping=False)
        with b.request("default", c.cookies["sessionid"].value) as s:
            assert s["cart"] == expected


def test_failover_rewrites_the_cookie_to_this_node() -> None:
    store = MemoryStore()
    with override_settings(SESSIONKEEPER=config(STORE=store)):
        c = Client()
        c.post("/incr")
        cookie = c.cookies["sessionid"].value
    with override_settings(SESSIONKEEPER=config(STORE=store, NODE="b")):
        c = Client()
        c.cookies["sessionid"] = cookie
        r = c.get("/read")  # read-only, but the affinity moved: the cookie is rewritten
        assert r.json()["n"] == 1
        assert r.cookies["sessionid"].value.endswith(".b")
        assert manager().stats()["failovers"] == 1


def test_clearsessions_sweeps_expired_sessions() -> None:
    clock = sk.FakeClock()
    with override_settings(SESSIONKEEPER=config(CLOCK=clock, TIMEOUT_S=60)):
        Client().post("/incr")
        assert stored_count() == 1
        clock.advance(3600)
        call_command("clearsessions")
        assert manager().store.count("default", now=0) == 0


def test_system_check_reports_bad_configuration() -> None:
    with override_settings(SESSIONKEEPER={"WRITE": "sometimes", "BOGUS": 1, "STORE": "memory://"}):
        found = {m.id for m in checks.run_checks(tags=["sessionkeeper"])}
    assert {"sessionkeeper.E002", "sessionkeeper.E003", "sessionkeeper.W001"} <= found
    with override_settings(SESSIONKEEPER=[1]):
        assert [m.id for m in checks.run_checks(tags=["sessionkeeper"])] == ["sessionkeeper.E001"]
    with override_settings(SESSIONKEEPER={"STORE": "sqlite:///x.db"}):
        assert checks.run_checks(tags=["sessionkeeper"]) == []


def test_concurrent_increments_lose_nothing_with_serialize_access() -> None:
    with override_settings(SESSIONKEEPER=config(SERIALIZE_ACCESS=True)):
        first = Client()
        first.post("/incr")
        cookie = first.cookies["sessionid"].value
        errors: list[BaseException] = []

        def worker() -> None:
            c = Client()
            c.cookies["sessionid"] = cookie
            try:
                for _ in range(100):
                    assert c.post("/incr").status_code == 200
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        assert first.get("/read").json()["n"] == 401


def test_async_views_under_the_asgi_handler() -> None:
    from django.test import AsyncClient

    with override_settings(SESSIONKEEPER=config(SERIALIZE_ACCESS=True, ACCESS_WAIT_S=2)):

        async def main() -> None:
            c = AsyncClient()
            r = await c.post("/aincr")
            cookie = r.cookies["sessionid"].value
            c.cookies["sessionid"] = cookie
            for _ in range(3):
                await c.post("/aincr")
            await c.get("/read")  # read only: released at request_finished
            assert (await c.post("/aincr")).json() == {"n": 5}

        asyncio.run(main())


def test_the_managers_tracking_follows_djangos_cookie_settings() -> None:
    assert manager().tracking == sk.Tracking(
        cookie_name="sessionid", cookie_secure=False, cookie_samesite="Lax",
        cookie_max_age_s=settings.SESSION_COOKIE_AGE,
    )  # fmt: skip
    with override_settings(
        SESSION_COOKIE_NAME="sid", SESSION_COOKIE_DOMAIN="example.com", SESSION_COOKIE_PATH="/app",
        SESSION_COOKIE_SECURE=True, SESSION_COOKIE_HTTPONLY=False, SESSION_COOKIE_SAMESITE=False,
        SESSION_EXPIRE_AT_BROWSER_CLOSE=True,
    ):  # fmt: skip
        skd.reset_manager()  # the settings are read when the manager is built
        assert manager().tracking == sk.Tracking(
            cookie_name="sid", cookie_domain="example.com", cookie_path="/app",
            cookie_secure=True, cookie_httponly=False, cookie_samesite=None,
        )  # fmt: skip
    with override_settings(SESSION_COOKIE_AGE=600, SESSION_COOKIE_SAMESITE="Strict"):
        skd.reset_manager()
        tracking = manager().tracking
        assert (tracking.cookie_max_age_s, tracking.cookie_samesite) == (600, "Strict")
