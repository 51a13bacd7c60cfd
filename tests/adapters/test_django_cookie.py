"""``sessionkeeper.django.SessionMiddleware``: the cookie the browser gets is the manager's
``Tracking`` (its name, scope, flags and Partitioned), through Django's test client and Django's
real WSGI handler; with the default Tracking it is the cookie Django's own middleware renders."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import checks
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path

import tests.adapters.test_django as base  # configures Django, and holds the views' URLconf
from sessionkeeper import Tracking
from sessionkeeper import django as skd
from sessionkeeper.tracking import Mode

OURS = [
    "sessionkeeper.django.SessionMiddleware",
    "sessionkeeper.django.SessionUnavailableMiddleware",
]
DJANGOS = ["django.contrib.sessions.middleware.SessionMiddleware"]
CHIPS = Tracking(
    cookie_name="sid", cookie_domain="example.com", cookie_path="/", cookie_samesite="None",
    cookie_partitioned=True,
)  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_manager() -> Iterator[None]:
    with override_settings(SESSIONKEEPER=base.config(), MIDDLEWARE=OURS):
        yield


def set_cookie_headers(method: str, path: str, cookie: str = "", **environ: Any) -> list[str]:
    """The ``Set-Cookie`` headers Django's WSGI handler sends: what a browser receives."""
    got: list[tuple[str, str]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> None:
        got.extend(headers)

    env = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "testserver",
        "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
        "HTTP_COOKIE": cookie, **environ,
    }  # fmt: skip
    body = WSGIHandler()(env, start_response)
    b"".join(body)
    body.close()  # type: ignore[attr-defined]  # request_finished, as a server sends it
    return [v.strip() for k, v in got if k.lower() == "set-cookie"]


def attributes(header: str) -> dict[str, str]:
    """``name=value; Attr=x; Flag`` -> ``{"name": value, "attr": "x", "flag": ""}``."""
    out: dict[str, str] = {}
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        out[key if not out else key.lower()] = value
    return out


def test_the_browser_gets_the_trackings_partitioned_cookie_and_it_is_read_back() -> None:
    with override_settings(SESSIONKEEPER=base.config(TRACKING=CHIPS)):
        [header] = set_cookie_headers("POST", "/incr")
        got = attributes(header)
        assert set(got) == {"sid", "domain", "expires", "max-age", "path", "samesite", "secure",
                            "httponly", "partitioned"}  # fmt: skip
        assert header.endswith("; Partitioned")
        assert (got["domain"], got["path"], got["samesite"]) == ("example.com", "/", "None")
        assert int(got["max-age"]) == base.settings.SESSION_COOKIE_AGE
        c = Client()
        c.cookies["sid"] = got["sid"]
        assert c.get("/read").json() == {"n": 1, "key": got["sid"]}
        assert c.post("/incr").json() == {"n": 2}


def test_flush_deletes_the_cookie_in_its_scope_with_partitioned() -> None:
    with override_settings(SESSIONKEEPER=base.config(TRACKING=CHIPS)):
        [header] = set_cookie_headers("POST", "/incr")
        sid = attributes(header)["sid"]
        [deleted] = set_cookie_headers("POST", "/logout", cookie=f"sid={sid}")
        got = attributes(deleted)
        assert got["sid"] == '""' and got["max-age"] == "0"
        assert got["expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"
        assert {"domain", "path", "samesite", "secure", "partitioned"} <= set(got)
        c = Client()
        c.cookies["sid"] = sid
        assert c.get("/read").json()["n"] is None  # ended, not only forgotten by the browser


def test_secure_when_the_tracking_says_on_https_requests_only() -> None:
    with override_settings(SESSIONKEEPER=base.config(TRACKING=Tracking(cookie_secure=None))):
        plain = Client().post("/incr").cookies["sessionid"]
        secure = Client().post("/incr", secure=True).cookies["sessionid"]
        assert plain["secure"] == "" and secure["secure"] is True


def test_max_age_and_expires_follow_the_session() -> None:
    c = Client()
    c.post("/incr")
    morsel = c.post("/expiry?s=120").cookies["sessionid"]
    assert morsel["max-age"] == 120 and morsel["expires"]
    with override_settings(SESSION_EXPIRE_AT_BROWSER_CLOSE=True):
        morsel = Client().post("/incr").cookies["sessionid"]
        assert morsel["max-age"] == "" and morsel["expires"] == ""


@pytest.mark.parametrize("overrides", [
    {}, {"SESSION_COOKIE_SECURE": True}, {"SESSION_COOKIE_HTTPONLY": False},
    {"SESSION_COOKIE_SAMESITE": "Strict"}, {"SESSION_COOKIE_SAMESITE": False},
    {"SESSION_COOKIE_NAME": "sid", "SESSION_COOKIE_DOMAIN": ".example.local",
     "SESSION_COOKIE_PATH": "/example/"},
])  # fmt: skip
def test_without_a_tracking_the_cookie_is_the_one_djangos_middleware_renders(
    overrides: dict[str, Any],
) -> None:
    """The settings mapped onto Tracking and back: the same Set-Cookie and deletion, byte for
    byte (the id and the second of Expires aside), as Django's own SessionMiddleware; but a
    deletion of a Secure cookie is Secure too (Django's is not: both delete it over https)."""
    name = overrides.get("SESSION_COOKIE_NAME", "sessionid")
    rendered: dict[str, list[str]] = {}
    for label, middleware in (("ours", OURS), ("django's", DJANGOS)):
        with override_settings(MIDDLEWARE=middleware, **overrides):
            c = Client()
            r = c.post("/incr")
            key = r.cookies[name].value
            made = str(r.cookies[name]).replace(key, "ID")
            gone = str(c.post("/logout").cookies[name])
            rendered[label] = [re.sub(r"expires=[^;]*;", "expires=E;", made), gone]
            assert r["Vary"] == "Cookie"
    if overrides.get("SESSION_COOKIE_SECURE"):
        rendered["django's"][1] += "; Secure"
    assert rendered["ours"] == rendered["django's"]


def test_vary_cookie_on_a_read_and_no_cookie_when_nothing_changed() -> None:
    c = Client()
    c.post("/incr")
    r = c.get("/read")
    assert r["Vary"] == "Cookie" and "sessionid" not in r.cookies


def test_a_5xx_sets_no_cookie_and_stores_nothing() -> None:
    c = Client(raise_request_exception=False)
    c.post("/incr")
    r = c.post("/fail")
    assert r.status_code == 500 and "sessionid" not in r.cookies
    assert c.get("/read").json()["n"] == 1


def test_header_mode_reads_and_sends_the_id_in_its_header() -> None:
    tracking = Tracking(modes=(Mode.HEADER,))
    with override_settings(SESSIONKEEPER=base.config(TRACKING=tracking)):
        r = Client().post("/incr")
        sid = r["X-Session-Id"]
        assert sid.endswith(".a") and not r.cookies
        r = Client(headers={"X-Session-Id": sid}).post("/incr")
        assert r.json() == {"n": 2}


def test_the_checks_say_which_middleware_renders_the_tracking() -> None:
    with override_settings(SESSIONKEEPER={"TRACKING": CHIPS}, MIDDLEWARE=DJANGOS):
        found = [m.id for m in checks.run_checks(tags=["sessionkeeper"])]
        assert found == ["sessionkeeper.W003"]
    with override_settings(SESSIONKEEPER={"TRACKING": CHIPS}):
        assert checks.run_checks(tags=["sessionkeeper"]) == []  # ours: no W002, no W003
    with override_settings(SESSIONKEEPER={"TRACKING": Tracking(cookie_secure=False, cookie_max_age_s=5)},
                           MIDDLEWARE=DJANGOS):  # fmt: skip
        assert checks.run_checks(tags=["sessionkeeper"]) == []  # the same cookie as Django's
    with override_settings(SESSIONKEEPER={}, MIDDLEWARE=[]):
        assert [m.id for m in checks.run_checks(tags=["sessionkeeper"])] == ["sessionkeeper.W002"]


def interrupted(request: HttpRequest) -> HttpResponse:
    """A view whose session another context (a concurrent logout) ends while it runs."""
    key = request.session.session_key
    request.session["n"] = 99
    other = skd.SessionStore(key)
    other.delete()
    return HttpResponse("changed")


urlpatterns = [*base.urlpatterns, path("interrupted", interrupted)]


@pytest.mark.parametrize("middleware", [OURS, DJANGOS])
def test_a_session_ended_during_the_request_is_session_interrupted_not_resurrected(
    middleware: list[str],
) -> None:
    with override_settings(MIDDLEWARE=middleware, ROOT_URLCONF=__name__):
        c = Client(raise_request_exception=False)
        c.post("/incr")
        sid = c.cookies["sessionid"].value
        r = c.post("/interrupted")
        assert r.status_code == 400  # Django answers SessionInterrupted with Bad Request
        assert "sessionid" not in r.cookies
        assert skd.get_manager().store.load("default", sid.split(".")[0]) is None
        c.cookies["sessionid"] = sid
        assert c.get("/read").json()["n"] is None
