"""Section: in-process cost per request in each framework, against the sessions a user would pick
instead.

Four frameworks (a bare WSGI app, Flask, Django, Starlette), each with no session, with its own
built-in session, with the peers a user would install instead (Flask-Session on Redis and on
PostgreSQL, starsessions on Redis) and with sessionkeeper under each write policy on SQLite,
PostgreSQL, MySQL/MariaDB and Redis. Every request presents the cookie of an existing session
(round-robin over a few), reads one attribute and writes it back.

No HTTP: a WSGI app (Flask's, Django's ``WSGIHandler``) is called with a prepared environ and its
body iterated and closed; a Starlette app is awaited with a prepared scope, ``receive`` and
``send``, all in one event loop. Each framework runs in a process of its own
(``python -m bench.frameworks --framework NAME``, which prints JSON), because Django's settings are
configured once per process and because a fresh heap is fairer to every framework. Within a
framework the contenders are measured in interleaved rounds after a warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .report import BenchConfig, Section, SectionResult, Table, Verdict, ratio, us
from .timing import call, run_requests, summarize

FRAMEWORKS = ("wsgi", "flask", "django", "starlette")
TITLES = {"wsgi": "bare WSGI", "flask": "Flask", "django": "Django", "starlette": "Starlette"}
STORES = ("SQLite", "PostgreSQL", "MySQL", "Redis")
#: Policy label -> ``write=`` spec. The first two are the ones the quick run and the chart keep.
POLICIES = {
    "EndOfRequest": "end-of-request",
    "TimeBased(10)": "time-based:10",
    "OnAttribute": "on-attribute",
    "AfterUpdates(10)": "after-updates:10",
    "AfterRequests(10)": "after-requests:10",
    "Manual": "manual",
}
SERVICE_DEFAULTS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
    "mysql": "mysql://root@127.0.0.1:3306/test",
    "redis": "redis://127.0.0.1:6379/0",
}
STORE_SERVICE = {"PostgreSQL": "postgres", "MySQL": "mysql", "Redis": "redis"}

# Targets (issue 5).
FLASK_TARGET = ("TimeBased(10)", "SQLite")
FLASK_MAX_RATIO = 1.3
DJANGO_TARGET = ("TimeBased(10)", "PostgreSQL")
DJANGO_CACHED_DB_FACTOR = 10.0

SECRET = "bench-secret-key-" + "x" * 32
PATH = "/cart"


class Skipped(Exception):
    """A contender that cannot run here (a server down, a package missing); the reason is shown."""


# -- services --------------------------------------------------------------------------------------


def service_url(name: str) -> str:
    """The same URLs and overrides as the test suite (``SESSIONKEEPER_TEST_<NAME>_URL``)."""
    return os.environ.get(f"SESSIONKEEPER_TEST_{name.upper()}_URL", SERVICE_DEFAULTS[name])


def service_down(name: str) -> str | None:
    """Why service ``name`` cannot be reached (a TCP connect), or ``None``."""
    url = service_url(name)
    parts = urlsplit(url)
    port = parts.port or {"postgres": 5432, "mysql": 3306, "redis": 6379}[name]
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=1.0):
            return None
    except OSError as exc:
        return f"{name} not reachable at {parts.hostname}:{port} ({exc})"


# -- what one worker process measures -----------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    sessions: int  # existing sessions the requests cycle through
    warmup_s: float
    budget_s: float  # measuring time per contender, over all rounds
    min_requests: int
    max_requests: int
    rounds: int
    combos: tuple[tuple[str, str], ...]  # sessionkeeper's (policy, store) pairs


ALL_COMBOS = tuple((p, s) for p in POLICIES for s in STORES)


FULL = Scale(
    sessions=32,
    warmup_s=0.1,
    budget_s=0.45,
    min_requests=300,
    max_requests=40_000,
    rounds=3,
    combos=ALL_COMBOS,
)
QUICK = Scale(
    sessions=2,
    warmup_s=0.0,
    budget_s=0.005,
    min_requests=10,
    max_requests=200,
    rounds=1,
    combos=(("EndOfRequest", "SQLite"), *(("TimeBased(10)", s) for s in STORES)),
)


class Runner:
    """Makes ``n`` requests of one contender, appending each one's duration in ns to ``out``."""

    manager: Any = None  # a SessionManager, for sessionkeeper contenders

    def run(self, n: int, out: list[int]) -> None:
        raise NotImplementedError


class WSGIRunner(Runner):
    def __init__(self, app: Any, environs: list[dict[str, Any]], before: Callable[[], None]):
        self.app, self.environs, self.before = app, environs, before

    def run(self, n: int, out: list[int]) -> None:
        self.before()
        run_requests(self.app, self.environs, n, out)


class ASGIRunner(Runner):
    def __init__(self, app: Any, scopes: list[dict[str, Any]], loop: asyncio.AbstractEventLoop):
        self.app, self.scopes, self.loop = app, scopes, loop

    def run(self, n: int, out: list[int]) -> None:
        self.loop.run_until_complete(_drive_asgi(self.app, self.scopes, n, out))


@dataclass
class Contender:
    label: str
    kind: str  # "none", "peer" or "sessionkeeper"
    store: str
    policy: str = ""
    runner: Runner | None = None
    samples: list[int] = field(default_factory=list)
    round_medians_us: list[float] = field(default_factory=list)
    per_round: int = 0
    writes_per_request: float | None = None
    misses: int = 0


@dataclass
class Env:
    """What the contenders of one worker share: a temporary folder, a unique prefix for tables and
    keys on the shared servers, the clean-ups to run (last registered, first run)."""

    framework: str
    scale: Scale
    tmp: Path
    prefix: str = field(default_factory=lambda: f"skb{uuid.uuid4().hex[:8]}_")
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    down: dict[str, str | None] = field(default_factory=dict)
    loop: asyncio.AbstractEventLoop | None = None

    def need(self, service: str) -> str:
        if service not in self.down:
            self.down[service] = service_down(service)
        reason = self.down[service]
        if reason is not None:
            raise Skipped(reason)
        return service_url(service)

    def on_close(self, fn: Callable[[], None]) -> None:
        self.cleanups.append(fn)

    def close(self) -> None:
        while self.cleanups:
            fn = self.cleanups.pop()
            try:
                fn()
            except Exception as exc:
                self.notes.append(f"clean-up failed: {type(exc).__name__}: {exc}")


def _redis_delete_prefix(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


def sk_manager(env: Env, policy: str, store: str, tag: str) -> Any:
    """A ``SessionManager`` with ``policy`` on its own tables/keys of ``store``; closed, then its
    tables or keys removed, at the end of the run."""
    import sessionkeeper as sk
    from sessionkeeper.stores import open_store

    name = f"{env.prefix}{tag}"
    if store == "SQLite":
        target = open_store(f"sqlite:///{env.tmp / name}.db")
    elif store in ("PostgreSQL", "MySQL"):
        url = env.need(STORE_SERVICE[store])
        target = open_store(url, table_prefix=f"{name}_")
        sql = target

        def drop() -> None:
            sql.tables.metadata.drop_all(sql.engine)  # type: ignore[attr-defined]
            sql.engine.dispose()  # type: ignore[attr-defined]

        env.on_close(drop)
    elif store == "Redis":
        url = env.need("redis")
        target = open_store(url, key_prefix=f"{name}:")
        env.on_close(lambda: _redis_delete_prefix(url, f"{name}:"))
    else:
        raise ValueError(store)
    manager = sk.SessionManager(target, write=POLICIES[policy], node="bench")
    env.on_close(manager.close)
    return manager


# -- WSGI plumbing -------------------------------------------------------------------------------


def base_environ() -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": PATH,
        "QUERY_STRING": "",
        "SERVER_NAME": "bench",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "bench",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def _cookie_from(set_cookies: Iterable[str], name: str) -> str:
    for header in set_cookies:
        key, _, value = header.split(";", 1)[0].strip().partition("=")
        if key == name:
            return value
    raise AssertionError(f"no {name} cookie in {list(set_cookies)}")


def wsgi_sessions(
    app: Any, cookie_name: str | None, sessions: int, before: Callable[[], None] = lambda: None
) -> WSGIRunner:
    """Creates ``sessions`` sessions through ``app`` (each with one attribute set), checks that a
    request with each cookie works, and returns a runner cycling through those cookies."""
    before()
    if cookie_name is None:
        environs = [base_environ()]
    else:
        environs = []
        for _ in range(sessions):
            status, headers, _ = call(app, base_environ())
            assert status.startswith("200"), status
            value = _cookie_from((v for k, v in headers if k.lower() == "set-cookie"), cookie_name)
            environs.append({**base_environ(), "HTTP_COOKIE": f"theme=dark; {cookie_name}={value}"})
    for environ in environs:
        status, _, body = call(app, dict(environ))
        assert status.startswith("200") and body == b"ok", (status, body)
    return WSGIRunner(app, environs, before)


def _counter(session: Any) -> None:
    session["hits"] = session.get("hits", 0) + 1


# -- bare WSGI -----------------------------------------------------------------------------------

RESPONSE_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "2")]


def _wsgi_app(key: str | None) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if key is not None:
            _counter(environ[key])
        start_response("200 OK", RESPONSE_HEADERS)
        return [b"ok"]

    return app


def wsgi_contenders(env: Env) -> list[tuple[Contender, Callable[[], Runner]]]:
    from sessionkeeper.wsgi import SessionMiddleware

    from .wsgi_overhead import DictSessionMiddleware

    n = env.scale.sessions
    out: list[tuple[Contender, Callable[[], Runner]]] = [
        (Contender("no session", "none", "-"), lambda: wsgi_sessions(_wsgi_app(None), None, n)),
    ]

    def dict_session() -> Runner:
        app = DictSessionMiddleware(_wsgi_app("session"))
        return wsgi_sessions(app, app.cookie_name, n)

    out.append((Contender("hand-written cookie → dict", "peer", "process memory"), dict_session))

    def sk_make(policy: str, store: str, tag: str) -> Callable[[], Runner]:
        def make() -> Runner:
            manager = sk_manager(env, policy, store, tag)
            app = SessionMiddleware(_wsgi_app("sessionkeeper.session"), manager, "bench")
            runner = wsgi_sessions(app, manager.tracking.cookie_name, n)
            runner.manager = manager
            return runner

        return make

    return out + _sk_contenders(env, sk_make)


def _sk_contenders(
    env: Env, make: Callable[[str, str, str], Callable[[], Runner]]
) -> list[tuple[Contender, Callable[[], Runner]]]:
    out = []
    for i, (policy, store) in enumerate(env.scale.combos):
        c = Contender(f"sessionkeeper {policy}", "sessionkeeper", store, policy)
        out.append((c, make(policy, store, f"{env.framework[:2]}{i:02d}")))
    return out


# -- Flask ---------------------------------------------------------------------------------------


def _flask_app(touch: bool, **config: Any) -> Any:
    import flask

    app = flask.Flask("bench")
    app.config.update(SECRET_KEY=SECRET, **config)

    @app.get(PATH)
    def cart() -> str:
        if touch:
            _counter(flask.session)
        return "ok"

    return app


def flask_contenders(env: Env) -> list[tuple[Contender, Callable[[], Runner]]]:
    n = env.scale.sessions

    def signed_cookie() -> Runner:
        return wsgi_sessions(_flask_app(True), "session", n)

    def flask_session_redis() -> Runner:
        import redis
        from flask_session import Session

        url = env.need("redis")
        prefix = f"{env.prefix}fs:"
        client = redis.Redis.from_url(url)
        env.on_close(client.close)
        env.on_close(lambda: _redis_delete_prefix(url, prefix))
        app = _flask_app(
            True, SESSION_TYPE="redis", SESSION_REDIS=client, SESSION_KEY_PREFIX=prefix
        )
        Session(app)
        return wsgi_sessions(app, "session", n)

    def flask_session_sql() -> Runner:
        from flask_session import Session
        from flask_sqlalchemy import SQLAlchemy

        url = env.need("postgres").replace("postgresql://", "postgresql+psycopg://", 1)
        app = _flask_app(
            True,
            SQLALCHEMY_DATABASE_URI=url,
            SESSION_TYPE="sqlalchemy",
            SESSION_SQLALCHEMY_TABLE=f"{env.prefix}flask_sessions",
        )
        db = SQLAlchemy(app)
        app.config["SESSION_SQLALCHEMY"] = db
        Session(app)

        def drop() -> None:
            with app.app_context():
                app.session_interface.sql_session_model.__table__.drop(db.engine)
                db.session.remove()
                db.engine.dispose()

        env.on_close(drop)
        return wsgi_sessions(app, "session", n)

    fs = _version("Flask-Session")
    out: list[tuple[Contender, Callable[[], Runner]]] = [
        (Contender("no session", "none", "-"), lambda: wsgi_sessions(_flask_app(False), None, n)),
        (Contender("Flask signed-cookie session (built-in)", "peer", "cookie"), signed_cookie),
        (Contender(f"Flask-Session {fs}", "peer", "Redis"), flask_session_redis),
        (Contender(f"Flask-Session {fs} (SQLAlchemy)", "peer", "PostgreSQL"), flask_session_sql),
    ]

    def sk_make(policy: str, store: str, tag: str) -> Callable[[], Runner]:
        def make() -> Runner:
            from sessionkeeper.flask import SessionKeeper

            manager = sk_manager(env, policy, store, tag)
            app = _flask_app(True)
            SessionKeeper(app, manager=manager, app_name="bench")
            runner = wsgi_sessions(app, "session", n)
            runner.manager = manager
            return runner

        return make

    return out + _sk_contenders(env, sk_make)


# -- Django --------------------------------------------------------------------------------------


def _django_view(request: Any) -> Any:
    from django.http import HttpResponse

    session = getattr(request, "session", None)
    if session is not None:
        _counter(session)
    return HttpResponse(b"ok", content_type="text/plain")


urlpatterns: list[Any] = []  # ROOT_URLCONF of the Django worker: this module


def _django_setup(env: Env) -> str | None:
    """``settings.configure`` for this process; Django's own database sessions get a PostgreSQL
    schema of their own (dropped at the end). Returns why PostgreSQL is unusable, or ``None``."""
    import django
    from django.conf import settings
    from django.urls import path

    pg_down = service_down("postgres")
    databases: dict[str, Any] = {}
    schema = f"{env.prefix}django".lower()
    if pg_down is None:
        import psycopg

        url = service_url("postgres")
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
        except Exception as exc:
            pg_down = f"postgres: {type(exc).__name__}: {exc}"
        else:

            def drop_schema() -> None:
                from django.db import connections

                connections.close_all()
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"DROP SCHEMA {schema} CASCADE")

            env.on_close(drop_schema)
            parts = urlsplit(url)
            databases["default"] = {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": parts.path.lstrip("/") or "postgres",
                "USER": parts.username or "postgres",
                "PASSWORD": parts.password or "",
                "HOST": parts.hostname or "127.0.0.1",
                "PORT": parts.port or 5432,
                # Persistent connections: what a deployment that cares about latency sets.
                "CONN_MAX_AGE": None,
                "OPTIONS": {"options": f"-c search_path={schema}"},
            }
    settings.configure(
        DEBUG=False,
        SECRET_KEY=SECRET,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=["django.contrib.sessions"],
        DATABASES=databases,
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        SESSIONKEEPER={"APP_NAME": "bench"},
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )
    django.setup()
    urlpatterns[:] = [path(PATH.lstrip("/"), _django_view)]
    if pg_down is None:
        from django.contrib.sessions.models import Session
        from django.db import connection

        with connection.schema_editor() as editor:
            editor.create_model(Session)
    return pg_down


DJANGOS_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
OUR_MIDDLEWARE = "sessionkeeper.django.SessionMiddleware"  # the README's setup for our engine


def _django_handler(engine: str | None, middleware: str = DJANGOS_MIDDLEWARE) -> Any:
    """A ``WSGIHandler`` whose middleware is ``middleware`` (Django's ``SessionMiddleware`` or
    ours) over ``engine`` (none at all for ``None``). The middleware reads ``SESSION_ENGINE``
    once, when it is built."""
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler

    settings.MIDDLEWARE = [] if engine is None else [middleware]
    settings.SESSION_ENGINE = engine or "django.contrib.sessions.backends.db"
    return WSGIHandler()


def django_contenders(env: Env) -> list[tuple[Contender, Callable[[], Runner]]]:
    n = env.scale.sessions
    pg_down = _django_setup(env)

    def builtin(engine: str, needs_pg: bool) -> Callable[[], Runner]:
        def make() -> Runner:
            if needs_pg and pg_down:
                raise Skipped(pg_down)
            return wsgi_sessions(
                _django_handler(f"django.contrib.sessions.backends.{engine}"), "sessionid", n
            )

        return make

    out: list[tuple[Contender, Callable[[], Runner]]] = [
        (
            Contender("no session", "none", "-"),
            lambda: wsgi_sessions(_django_handler(None), None, n),
        ),
        (Contender("Django `db` (built-in)", "peer", "PostgreSQL"), builtin("db", True)),
        (Contender("Django `cache` (built-in)", "peer", "LocMemCache"), builtin("cache", False)),
        (
            Contender("Django `cached_db` (built-in)", "peer", "LocMem + PostgreSQL"),
            builtin("cached_db", True),
        ),
    ]

    def sk_make(
        policy: str, store: str, tag: str, middleware: str = OUR_MIDDLEWARE
    ) -> Callable[[], Runner]:
        def make() -> Runner:
            from sessionkeeper.django import _process

            manager = sk_manager(env, policy, store, tag)

            def use() -> None:
                # One manager per process is the adapter's rule; the bench swaps it between
                # contenders (each round measures one contender at a time).
                _process._manager = manager

            handler = _django_handler("sessionkeeper.django", middleware)
            runner = wsgi_sessions(handler, "sessionid", n, use)
            # The sessions must be this contender's: a swap that misses the adapter's manager
            # measured another manager's sessions and showed no writes (fixed in 2026-12).
            created = manager.stats()["created"]
            assert created >= n, f"{created} of {n} sessions created through the bench's manager"
            runner.manager = manager
            return runner

        return make

    policy, store = env.scale.combos[0]
    behind_djangos = (  # the engine alone, Django's own middleware rendering the cookie
        Contender(f"sessionkeeper {policy}, Django's SessionMiddleware", "sessionkeeper", store,
                  policy),
        sk_make(policy, store, "djdm", DJANGOS_MIDDLEWARE),
    )  # fmt: skip
    return [*out, *_sk_contenders(env, sk_make), behind_djangos]


# -- Starlette -----------------------------------------------------------------------------------


def base_scope(cookie: str | None) -> dict[str, Any]:
    headers = [(b"host", b"bench"), (b"user-agent", b"bench")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode("latin-1")))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("bench", 80),
    }


_REQUEST_MESSAGE = {"type": "http.request", "body": b"", "more_body": False}


async def _receive() -> dict[str, Any]:
    return _REQUEST_MESSAGE


async def _discard(message: dict[str, Any]) -> None:
    return None


async def _drive_asgi(app: Any, scopes: Sequence[dict[str, Any]], n: int, out: list[int]) -> None:
    perf = time.perf_counter_ns
    receive, send = _receive, _discard
    k = len(scopes)
    for i in range(n):
        scope = scopes[i % k].copy()  # a server builds a fresh scope per request
        t0 = perf()
        await app(scope, receive, send)
        out.append(perf() - t0)


async def _asgi_call(
    app: Any, scope: dict[str, Any]
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    seen: dict[str, Any] = {"body": b""}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            seen["status"], seen["headers"] = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            seen["body"] += message.get("body", b"")

    await app(scope, _receive, send)
    return seen["status"], seen["headers"], seen["body"]


def asgi_sessions(env: Env, app: Any, cookie_name: str | None, sessions: int) -> ASGIRunner:
    assert env.loop is not None
    run = env.loop.run_until_complete
    if cookie_name is None:
        scopes = [base_scope(None)]
    else:
        scopes = []
        for _ in range(sessions):
            status, headers, _ = run(_asgi_call(app, base_scope(None)))
            assert status == 200, status
            values = (v.decode("latin-1") for k, v in headers if k.lower() == b"set-cookie")
            value = _cookie_from(values, cookie_name)
            scopes.append(base_scope(f"theme=dark; {cookie_name}={value}"))
    for scope in scopes:
        status, _, body = run(_asgi_call(app, dict(scope)))
        assert status == 200 and body == b"ok", (status, body)
    return ASGIRunner(app, scopes, env.loop)


def _starlette_app(touch: bool, middleware: Sequence[Any] = ()) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def cart(request: Any) -> Any:
        if touch:
            _counter(request.session)
        return PlainTextResponse("ok")

    return Starlette(routes=[Route(PATH, cart)], middleware=list(middleware))


def starlette_contenders(env: Env) -> list[tuple[Contender, Callable[[], Runner]]]:
    from starlette.middleware import Middleware

    env.loop = asyncio.new_event_loop()
    asyncio.set_event_loop(env.loop)
    env.on_close(env.loop.close)
    n = env.scale.sessions

    def builtin() -> Runner:
        from starlette.middleware.sessions import SessionMiddleware

        mw = [Middleware(SessionMiddleware, secret_key=SECRET)]
        return asgi_sessions(env, _starlette_app(True, mw), "session", n)

    def starsessions_redis() -> Runner:
        from redis.asyncio import Redis
        from starsessions import SessionAutoloadMiddleware, SessionMiddleware
        from starsessions.stores.redis import RedisStore

        url = env.need("redis")
        prefix = f"{env.prefix}ss:"
        client = Redis.from_url(url)
        assert env.loop is not None
        loop = env.loop
        env.on_close(lambda: loop.run_until_complete(client.aclose()))
        env.on_close(lambda: _redis_delete_prefix(url, prefix))
        mw = [
            Middleware(
                SessionMiddleware,
                store=RedisStore(connection=client, prefix=prefix),
                cookie_https_only=False,
            ),
            Middleware(SessionAutoloadMiddleware),
        ]
        return asgi_sessions(env, _starlette_app(True, mw), "session", n)

    ss = _version("starsessions")
    out: list[tuple[Contender, Callable[[], Runner]]] = [
        (
            Contender("no session", "none", "-"),
            lambda: asgi_sessions(env, _starlette_app(False), None, n),
        ),
        (Contender("Starlette SessionMiddleware (built-in)", "peer", "cookie"), builtin),
        (Contender(f"starsessions {ss}", "peer", "Redis"), starsessions_redis),
    ]

    def sk_make(policy: str, store: str, tag: str) -> Callable[[], Runner]:
        def make() -> Runner:
            from sessionkeeper.asgi import SessionMiddleware

            manager = sk_manager(env, policy, store, tag)
            mw = [Middleware(SessionMiddleware, manager=manager, app_name="bench")]
            runner = asgi_sessions(env, _starlette_app(True, mw), manager.tracking.cookie_name, n)
            runner.manager = manager
            return runner

        return make

    return out + _sk_contenders(env, sk_make)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed: pip install -r bench/requirements.txt)"


CONTENDERS = {
    "wsgi": wsgi_contenders,
    "flask": flask_contenders,
    "django": django_contenders,
    "starlette": starlette_contenders,
}


# -- measuring (in the worker) -------------------------------------------------------------------


def _written(c: Contender) -> tuple[int, int]:
    m = c.runner.manager if c.runner is not None else None
    if m is None:
        return 0, 0
    st = m.stats()
    return st["store_sessions_written"], st["cache_misses"]


def measure(framework: str, scale: Scale) -> dict[str, Any]:
    """Set up every contender of ``framework``, warm each up, measure them in interleaved rounds;
    the result as JSON-ready data."""
    with tempfile.TemporaryDirectory(prefix="sk-bench-fw-") as tmp:
        env = Env(framework, scale, Path(tmp))
        contenders: list[Contender] = []
        try:
            for c, make in CONTENDERS[framework](env):
                try:
                    c.runner = make()
                except Skipped as exc:
                    env.notes.append(f"skipped: {c.label} on {c.store}: {exc}")
                    continue
                except Exception as exc:
                    env.notes.append(
                        f"skipped: {c.label} on {c.store}: {type(exc).__name__}: {exc}"
                    )
                    continue
                contenders.append(c)
            # Everything set up so far stays: a collection between contenders then scans only
            # what the requests allocated, and no contender pays for another's heap.
            gc.collect()
            gc.freeze()
            for c in contenders:
                assert c.runner is not None
                gc.collect()
                warm: list[int] = []
                deadline = time.perf_counter() + scale.warmup_s
                while time.perf_counter() < deadline or len(warm) < 5:
                    c.runner.run(5, warm)
                cost_s = sum(warm[len(warm) // 2 :]) / max(1, len(warm) - len(warm) // 2) / 1e9
                total = int(scale.budget_s / max(cost_s, 1e-9))
                total = max(scale.min_requests, min(scale.max_requests, total))
                c.per_round = max(1, total // scale.rounds)
            before = {id(c): _written(c) for c in contenders}
            for _ in range(scale.rounds):
                for c in contenders:
                    assert c.runner is not None
                    gc.collect()
                    start = len(c.samples)
                    c.runner.run(c.per_round, c.samples)
                    c.round_medians_us.append(summarize(c.samples[start:]).median_us)
            for c in contenders:
                if c.runner is not None and c.runner.manager is not None:
                    (w0, m0), (w1, m1) = before[id(c)], _written(c)
                    c.writes_per_request = (w1 - w0) / len(c.samples)
                    c.misses = m1 - m0
        finally:
            gc.unfreeze()
            env.close()
    rows = []
    for c in contenders:
        s = summarize(c.samples)
        rows.append(
            {
                "label": c.label,
                "kind": c.kind,
                "store": c.store,
                "policy": c.policy,
                "n": s.n,
                "median_us": s.median_us,
                "p99_us": s.p99_us,
                "quietest_round_us": min(c.round_medians_us),
                "writes_per_request": c.writes_per_request,
                "misses": c.misses,
            }
        )
    return {"framework": framework, "rows": rows, "notes": env.notes}


def worker_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.frameworks")
    parser.add_argument("--framework", choices=FRAMEWORKS, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.framework, QUICK if args.quick else FULL)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


# -- the section (in the ``python -m bench`` process) ---------------------------------------------


@dataclass
class Row:
    framework: str
    label: str
    kind: str
    store: str
    policy: str
    n: int
    median_us: float
    p99_us: float
    quietest_round_us: float
    writes_per_request: float | None
    misses: int


def start_worker(framework: str, quick: bool) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "bench.frameworks", "--framework", framework]
    if quick:
        cmd.append("--quick")
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": path},
    )


def collect_worker(framework: str, proc: subprocess.Popen[str]) -> tuple[list[Row], list[str]]:
    try:
        stdout, stderr = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return [], [f"skipped: {TITLES[framework]}: the worker took more than 900 s"]
    if proc.returncode != 0:
        tail = (stderr.strip().splitlines() or ["(no output)"])[-1]
        return [], [f"skipped: {TITLES[framework]}: the worker failed ({tail})"]
    data = json.loads(stdout.strip().splitlines()[-1])
    rows = [Row(framework=framework, **r) for r in data["rows"]]
    return rows, list(data["notes"])


def fastest_peer(rows: Sequence[Row]) -> Row | None:
    peers = [r for r in rows if r.kind == "peer"]
    return min(peers, key=lambda r: r.median_us) if peers else None


def no_session(rows: Sequence[Row]) -> Row | None:
    return next((r for r in rows if r.kind == "none"), None)


def find(rows: Sequence[Row], *, label: str = "", policy: str = "", store: str = "") -> Row | None:
    for r in rows:
        if (
            (not label or r.label == label)
            and (not policy or r.policy == policy)
            and (not store or r.store == store)
        ):
            return r
    return None


def framework_table(title: str, rows: Sequence[Row]) -> Table:
    peer, none = fastest_peer(rows), no_session(rows)
    out = []
    for r in rows:
        out.append(
            [
                r.label,
                r.store,
                f"{r.n:,}",
                us(r.median_us),
                us(r.p99_us),
                ratio(r.median_us / peer.median_us) if peer else "-",
                ratio(r.median_us / none.median_us) if none else "-",
                "-" if r.writes_per_request is None else f"{r.writes_per_request:.3f}",
            ]
        )
    return Table(
        [
            f"{title}: contender",
            "store",
            "requests",
            "median µs",
            "p99 µs",
            "vs fastest peer",
            "vs no session",
            "store writes/req",
        ],
        out,
    )


def verdicts(by_fw: dict[str, list[Row]]) -> list[Verdict]:
    out: list[Verdict] = []
    flask_rows = by_fw.get("flask", [])
    none, sk_row = (
        no_session(flask_rows),
        find(flask_rows, policy=FLASK_TARGET[0], store=FLASK_TARGET[1]),
    )
    target = (
        f"Flask with sessionkeeper {FLASK_TARGET[0]} on {FLASK_TARGET[1]} costs at most "
        f"{FLASK_MAX_RATIO:g}x Flask with no session (median)"
    )
    if none and sk_row:
        r = sk_row.median_us / none.median_us
        q = sk_row.quietest_round_us / none.quietest_round_us
        out.append(
            Verdict(
                target,
                f"{r:.2f}x ({sk_row.median_us:.1f} vs {none.median_us:.1f} µs; "
                f"quietest rounds {q:.2f}x)",
                r <= FLASK_MAX_RATIO,
            )
        )
    django_rows = by_fw.get("django", [])
    sk_row = find(django_rows, policy=DJANGO_TARGET[0], store=DJANGO_TARGET[1])
    cache = find(django_rows, label="Django `cache` (built-in)")
    cached_db = find(django_rows, label="Django `cached_db` (built-in)")
    name = f"Django with sessionkeeper {DJANGO_TARGET[0]} on {DJANGO_TARGET[1]}"
    if sk_row and cache:
        out.append(
            Verdict(
                f"{name} is cheaper than Django's `cache` backend (LocMemCache; median)",
                f"{sk_row.median_us:.1f} vs {cache.median_us:.1f} µs "
                f"({cache.median_us / sk_row.median_us:.2f}x cheaper)",
                sk_row.median_us < cache.median_us,
            )
        )
    if sk_row and cached_db:
        f = cached_db.median_us / sk_row.median_us
        out.append(
            Verdict(
                f"{name} is at least {DJANGO_CACHED_DB_FACTOR:g}x cheaper than Django's "
                "`cached_db` on PostgreSQL (median)",
                f"{f:.1f}x cheaper ({sk_row.median_us:.1f} vs {cached_db.median_us:.0f} µs)",
                f >= DJANGO_CACHED_DB_FACTOR,
            )
        )
    return out


def versions() -> str:
    names = ["Flask", "Flask-Session", "Django", "starlette", "starsessions"]
    found = []
    for n in names:
        try:
            found.append(f"{n} {metadata.version(n)}")
        except metadata.PackageNotFoundError:
            found.append(f"{n} (not installed)")
    return ", ".join(found)


def run(config: BenchConfig) -> SectionResult:
    scale = QUICK if config.quick else FULL
    result = SectionResult(
        "Frameworks: in-process cost per request",
        "Each framework with no session, its built-in session, the peers a user would pick "
        "instead, and sessionkeeper under each write policy on each store. Every request presents "
        f"the cookie of an existing session (one of {scale.sessions}, round-robin), reads one "
        "attribute and writes it back. No HTTP: WSGI apps (Flask, Django's `WSGIHandler`) are "
        "called with a prepared environ, Starlette apps awaited with a prepared scope in one event "
        "loop; the timer spans the whole call. Each framework runs in a fresh process; its "
        f"contenders are warmed up, then measured in {scale.rounds} interleaved rounds. "
        "*vs fastest peer* compares the median with the fastest non-sessionkeeper session of the "
        "same framework, *vs no session* with the same framework without any session. "
        "sessionkeeper's deferred policies serve cache hits; EndOfRequest and OnAttribute write "
        "the store in every request. Django's database connections are persistent "
        f"(`CONN_MAX_AGE=None`). Versions: {versions()}.",
    )
    by_fw: dict[str, list[Row]] = {}
    # A full run measures one framework at a time; a quick run (a smoke test) starts them all.
    started = {fw: start_worker(fw, True) for fw in FRAMEWORKS} if config.quick else {}
    for fw in FRAMEWORKS:
        proc = started[fw] if config.quick else start_worker(fw, False)
        rows, notes = collect_worker(fw, proc)
        by_fw[fw] = rows
        result.notes += [f"{TITLES[fw]}: {n}" for n in notes]
        if rows:
            result.tables.append(framework_table(TITLES[fw], rows))
        for r in rows:
            if r.misses:
                result.notes.append(
                    f"{TITLES[fw]}: {r.label} on {r.store}: {r.misses} cache misses"
                )
    result.verdicts += verdicts(by_fw)
    if config.chart is not None and any(by_fw.values()):
        try:
            from .chart import write_chart

            write_chart(by_fw, config.chart, TITLES)
        except ImportError as exc:
            result.notes.append(f"no chart: {exc} (pip install -r bench/requirements.txt)")
        else:
            alt = "Median µs per request, per framework and contender"
            result.images.append((alt, config.chart.name))
    return result


SECTION = Section("frameworks", run)

if __name__ == "__main__":
    sys.exit(worker_main())
