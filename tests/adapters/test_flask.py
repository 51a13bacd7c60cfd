"""The Flask extension, driven by Flask's test client."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from datetime import timedelta
from typing import Any

import flask
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

import sessionkeeper as sk
from sessionkeeper.errors import ConfigurationError
from sessionkeeper.flask import SessionKeeper, manager_from_config
from sessionkeeper.stores.memory import MemoryStore
from tests.adapters.helpers import FlakyStore, WriteFailingStore


def make_app(manager: sk.SessionManager | None = None, **config: Any) -> flask.Flask:
    app = flask.Flask("shop")
    app.config.update(config)
    SessionKeeper(app, manager=manager)

    @app.post("/incr")
    def incr() -> dict[str, Any]:
        flask.session["n"] = flask.session.get("n", 0) + 1
        return {"n": flask.session["n"], "new": flask.session.new}

    @app.get("/read")
    def read() -> dict[str, Any]:
        return {"n": flask.session.get("n"), "cart": flask.session.get("cart")}

    @app.post("/fail")
    def fail() -> tuple[str, int]:
        flask.session["n"] = -1
        return "no", 500

    @app.post("/boom")
    def boom() -> str:
        flask.session["n"] = -2
        raise RuntimeError("boom")

    @app.post("/cart")
    def cart() -> str:
        flask.session.setdefault("cart", [])
        flask.session["cart"].append("apple")  # in place: only "accessed" or modified sees it
        if flask.request.args.get("mark"):
            flask.session.modified = True
        return "ok"

    @app.post("/permanent")
    def permanent() -> str:
        flask.session.permanent = True
        return "ok"

    @app.post("/clear")
    def clear() -> str:
        flask.session.clear()
        return "ok"

    @app.post("/logout")
    def logout() -> str:
        flask.session.invalidate()  # type: ignore[attr-defined]
        return "ok"

    @app.post("/login")
    def login() -> str:
        flask.session.rotate_id()  # type: ignore[attr-defined]
        return "ok"

    @app.post("/sync")
    def sync() -> str:
        flask.session["n"] = -3
        flask.session.sync()  # type: ignore[attr-defined]
        return "ok"

    return app


def memory_manager(**kwargs: Any) -> sk.SessionManager:
    kwargs.setdefault("node", "a")
    return sk.SessionManager(kwargs.pop("store", "memory://"), housekeeping=False, **kwargs)


def test_configured_from_app_config() -> None:
    app = make_app(SESSIONKEEPER_STORE="memory://", SESSIONKEEPER_WRITE="time-based:5",
                   SESSIONKEEPER_NODE="n7", SESSIONKEEPER_APP_NAME="shop2")  # fmt: skip
    interface = app.extensions["sessionkeeper"]
    assert interface.app_name == "shop2"
    assert interface.manager.policy == sk.TimeBased(5)
    assert interface.manager.node == "n7"
    with pytest.raises(ConfigurationError, match="SESSIONKEEPER_NOPE"):
        manager_from_config(flask.Config("/", {"SESSIONKEEPER_NOPE": 1}))


def test_a_manager_from_the_config_tracks_with_flasks_cookie_settings() -> None:
    defaults = manager_from_config(flask.Flask(__name__).config)
    assert defaults.tracking == sk.Tracking(
        cookie_name="session", cookie_samesite=None, cookie_secure=None
    )
    defaults.close()
    m = manager_from_config(
        flask.Config("/", {
            "SESSION_COOKIE_NAME": "sid", "SESSION_COOKIE_DOMAIN": "example.com",
            "SESSION_COOKIE_PATH": "/app", "SESSION_COOKIE_SECURE": True,
            "SESSION_COOKIE_HTTPONLY": False, "SESSION_COOKIE_SAMESITE": "Strict",
            "SESSION_COOKIE_PARTITIONED": True,
        })
    )  # fmt: skip
    assert m.tracking == sk.Tracking(
        cookie_name="sid", cookie_domain="example.com", cookie_path="/app", cookie_secure=True,
        cookie_httponly=False, cookie_samesite="Strict", cookie_partitioned=True,
    )  # fmt: skip
    m.close()
    root = manager_from_config(flask.Config("/", {"APPLICATION_ROOT": "/shop"}))
    assert root.tracking.cookie_path == "/shop"
    root.close()


def test_init_app_later() -> None:
    keeper = SessionKeeper(manager=memory_manager())
    app = flask.Flask("x")
    keeper.init_app(app)

    @app.post("/")
    def index() -> str:
        flask.session["a"] = 1
        return "ok"

    assert app.test_client().post("/").headers["Set-Cookie"].startswith("session=")


def test_round_trip_new_and_cookie() -> None:
    m = memory_manager()
    c = make_app(m, SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_NAME="sid").test_client()
    r = c.post("/incr")
    assert r.json == {"n": 1, "new": True}
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("sid=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Expires" not in cookie  # not permanent: a browser-session cookie
    assert "Cookie" in r.headers["Vary"]
    r = c.post("/incr")
    assert r.json == {"n": 2, "new": False}
    assert "Set-Cookie" not in r.headers
    assert m.store.count("shop", now=m.clock.time()) == 1


def test_a_changed_session_resends_its_cookie_after_the_cookie_settings_changed() -> None:
    app = make_app(memory_manager(), SESSION_COOKIE_SAMESITE="Lax")
    c = app.test_client()
    assert "SameSite=Lax" in c.post("/incr").headers["Set-Cookie"]
    app.config["SESSION_COOKIE_SAMESITE"] = "Strict"
    assert "Set-Cookie" not in c.get("/read").headers  # unchanged: nothing to resend it with
    r = c.post("/incr")
    assert r.json == {"n": 2, "new": False} and "SameSite=Strict" in r.headers["Set-Cookie"]
    assert "Set-Cookie" not in c.post("/incr").headers  # sent with these settings already


def test_read_only_request_creates_nothing() -> None:
    m = memory_manager()
    r = make_app(m).test_client().get("/read")
    assert "Set-Cookie" not in r.headers
    assert m.store.count("shop", now=m.clock.time()) == 0


def test_secure_flag_over_https() -> None:
    c = make_app(memory_manager()).test_client()
    assert "Secure" in c.post("/incr", base_url="https://localhost").headers["Set-Cookie"]


@pytest.mark.parametrize("path", ["/fail", "/boom"])
@pytest.mark.parametrize("propagate", [False, True])
def test_5xx_and_exceptions_roll_back(path: str, propagate: bool) -> None:
    m = memory_manager()
    app = make_app(m, PROPAGATE_EXCEPTIONS=propagate)
    c = app.test_client()
    c.post("/incr")
    if propagate and path == "/boom":
        with pytest.raises(RuntimeError):
            c.post(path)
    else:
        assert c.post(path).status_code == 500
    assert c.get("/read").json == {"n": 1, "cart": None}
    other = memory_manager(store=m.store, node="b")  # what the store has
    with other.request("shop", c.get_cookie("session").value) as s:  # type: ignore[union-attr]
        assert s["n"] == 1
    assert m.stats()["reverted_requests"] == 1


def test_each_request_ends_exactly_once() -> None:
    m = memory_manager(serialize_access=True, access_wait_s=0.5)
    app = make_app(m, PROPAGATE_EXCEPTIONS=True)
    c = app.test_client()
    c.post("/incr")
    with pytest.raises(RuntimeError):
        c.post("/boom")
    c.post("/fail")
    assert c.post("/incr").json == {"n": 2, "new": False}  # the access lock was released


def test_session_transaction_under_serialize_access_holds_nothing_after() -> None:
    m = memory_manager(serialize_access=True, access_wait_s=0.2)
    c = make_app(m).test_client()
    c.post("/incr")
    with c.session_transaction() as sess:
        assert sess["n"] == 1
        sess["n"] = 10
    assert c.post("/incr").json == {"n": 11, "new": False}  # written, and the hold released
    assert m.stats()["unavailable"] == 0


@pytest.mark.parametrize("contents,mark,expected", [
    ("updated", False, None), ("updated", True, ["apple", "apple"]),
    ("accessed", False, ["apple", "apple"]),
])  # fmt: skip
def test_nested_mutation(contents: str, mark: bool, expected: list[str] | None) -> None:
    store = MemoryStore()
    c = make_app(memory_manager(store=store, contents=contents)).test_client()
    c.post("/cart")  # a new session is written whole
    c.post("/cart?mark=1" if mark else "/cart")
    b = memory_manager(store=store, node="b")
    with b.request("shop", c.get_cookie("session").value) as s:  # type: ignore[union-attr]
        assert s["cart"] == (expected or ["apple"])


def test_permanent_sets_max_age_and_server_timeout() -> None:
    m = memory_manager()
    app = make_app(m, PERMANENT_SESSION_LIFETIME=timedelta(days=2))
    c = app.test_client()
    c.post("/incr")
    cookie = c.post("/permanent").headers["Set-Cookie"]
    assert "Max-Age=172800" in cookie
    token = c.get_cookie("session").value.split(".")[0]  # type: ignore[union-attr]
    stored = m.store.load("shop", token)
    assert stored is not None and stored.timeout_s == 172800
    # SESSION_REFRESH_EACH_REQUEST: a permanent session's cookie is renewed on every request
    assert "Max-Age=172800" in c.get("/read").headers["Set-Cookie"]


def test_clear_logout_and_login() -> None:
    m = memory_manager()
    c = make_app(m).test_client()
    c.post("/incr")
    first = c.get_cookie("session").value  # type: ignore[union-attr]
    c.post("/login")
    assert c.get_cookie("session").value != first  # type: ignore[union-attr]
    assert c.get("/read").json["n"] == 1  # type: ignore[index]
    c.post("/clear")
    assert c.get("/read").json["n"] is None  # type: ignore[index]
    c.post("/incr")  # clear() ended the session (issue 10): log in again to log out
    r = c.post("/logout")
    assert "session=;" in r.headers["Set-Cookie"] and "Max-Age=0" in r.headers["Set-Cookie"]
    assert m.store.count("shop", now=m.clock.time()) == 0


def test_store_down_for_an_uncached_session_is_503() -> None:
    store = FlakyStore()
    c = make_app(memory_manager(store=store)).test_client()
    c.post("/incr")
    cookie = c.get_cookie("session").value  # type: ignore[union-attr]
    other = make_app(memory_manager(store=store, node="b")).test_client()
    other.set_cookie("session", cookie)
    store.down = True
    r = other.post("/incr")
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"


@pytest.mark.parametrize("route", ["/login", "/logout", "/sync"])
def test_a_session_operation_during_an_outage_is_503(route: str) -> None:
    store = FlakyStore()
    m = memory_manager(store=store)
    c = make_app(m).test_client()
    c.post("/incr")
    store.down = True
    r = c.post(route)
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.data == b"Session store unavailable, please retry.\n"
    assert "Set-Cookie" not in r.headers and m.stats()["unavailable"] == 1
    store.down = False
    assert c.get("/read").json["n"] == 1  # type: ignore[index]


def test_failover_to_another_app_instance() -> None:
    store = MemoryStore()
    a = make_app(memory_manager(store=store)).test_client()
    a.post("/incr")
    b = make_app(memory_manager(store=store, node="b")).test_client()
    b.set_cookie("session", a.get_cookie("session").value)  # type: ignore[union-attr]
    r = b.post("/incr")
    assert r.json == {"n": 2, "new": False}
    assert r.headers["Set-Cookie"].split(";")[0].endswith(".b")


def test_concurrent_increments_lose_nothing_with_serialize_access() -> None:
    m = memory_manager(serialize_access=True)
    app = make_app(m)
    first = app.test_client()
    first.post("/incr")
    cookie = first.get_cookie("session").value  # type: ignore[union-attr]
    errors: list[BaseException] = []

    def worker() -> None:
        c = app.test_client()
        c.set_cookie("session", cookie)
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
    assert first.get("/read").json["n"] == 401  # type: ignore[index]


@given(
    st.lists(
        st.sampled_from(
            ["session", "sess", "a", "=", ";", " ", "\t", "x", "\\", "\n", "é", ",", '"']
        ),
        max_size=14,
    ).map("".join)
)
@settings(max_examples=1000, deadline=None)
def test_session_cookie_read_as_werkzeug_parses_it(header: str) -> None:
    from werkzeug.sansio.http import parse_cookie

    from sessionkeeper.flask import _session_cookie

    app = flask.Flask(__name__)
    for name in ("session", "a"):
        with app.test_request_context(environ_base={"HTTP_COOKIE": header}):
            request = flask.request._get_current_object()  # type: ignore[attr-defined]
            assert _session_cookie(request, name) == parse_cookie(header).get(name)


def test_a_changed_request_whose_write_is_refused_answers_503() -> None:
    """Defect 13: under EndOfRequest a change that cannot be stored is not acknowledged."""
    store = WriteFailingStore()
    m = memory_manager(store=store, outage_backoff_s=0)
    c = make_app(m).test_client()
    assert c.post("/incr").json == {"n": 1, "new": True}
    store.writes_down = True
    r = c.post("/incr")
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.data == b"Session store unavailable, please retry.\n"
    assert "Set-Cookie" not in r.headers
    assert c.get("/read").json == {"n": 1, "cart": None}  # rolled back; reads still served
    store.writes_down = False
    assert c.post("/incr").json == {"n": 2, "new": False}
    m.close()


@pytest.mark.parametrize("node", ["a", "b"])  # a restart of node a; a failover to node b
def test_flask_tagged_values_keep_their_type_after_a_restart(node: str) -> None:
    values = {
        "t": (1, "a"),
        "b": b"\x00raw",
        "d": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "u": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "m": Markup("<b>hi</b>"),
    }
    store = MemoryStore()

    def app_on(manager: sk.SessionManager) -> flask.Flask:
        app = flask.Flask("shop")
        SessionKeeper(app, manager=manager)

        @app.post("/put")
        def put() -> str:
            flask.session.update(values)
            flask.flash(Markup("<i>saved</i>"))
            return "ok"

        @app.get("/get")
        def get() -> dict[str, Any]:
            got = {k: flask.session[k] for k in values}
            types = {k: type(v).__name__ for k, v in got.items()}
            flashed = [type(m).__name__ for m in flask.get_flashed_messages()]
            return {"equal": got == values, "types": types, "flashed": flashed}

        return app

    first = app_on(memory_manager(store=store)).test_client()
    first.post("/put")
    cookie = first.get_cookie("session")
    assert cookie is not None
    restarted = app_on(memory_manager(store=store, node=node)).test_client()  # no cache
    restarted.set_cookie("session", cookie.value)
    assert restarted.get("/get").json == {
        "equal": True,
        "types": {"t": "tuple", "b": "bytes", "d": "datetime", "u": "UUID", "m": "Markup"},
        "flashed": ["Markup"],
    }
