"""The ASGI middleware under Starlette, driven in process by httpx's ASGITransport."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import sessionkeeper as sk
from sessionkeeper.asgi import SessionMiddleware
from sessionkeeper.stores.memory import MemoryStore
from tests.adapters.helpers import FlakyStore, WriteFailingStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_app(manager: sk.SessionManager, *, with_middleware: bool = True) -> Starlette:
    async def incr(request: Request) -> Response:
        request.session["n"] = request.session.get("n", 0) + 1
        return JSONResponse({"n": request.session["n"]})

    def incr_sync(request: Request) -> Response:  # runs in Starlette's thread pool
        request.session["n"] = request.session.get("n", 0) + 1
        return JSONResponse({"n": request.session["n"]})

    async def read(request: Request) -> Response:
        return JSONResponse({"n": request.session.get("n")})

    async def fail(request: Request) -> Response:
        request.session["n"] = -1
        return PlainTextResponse("no", status_code=500)

    async def boom(request: Request) -> Response:
        request.session["n"] = -2
        raise RuntimeError("boom")

    async def logout(request: Request) -> Response:
        request.session.invalidate()
        return PlainTextResponse("bye")

    async def login(request: Request) -> Response:
        request.session.rotate_id()
        return PlainTextResponse("hi")

    async def sync(request: Request) -> Response:
        request.session["n"] = -3
        await anyio.to_thread.run_sync(request.session.sync)  # store I/O: off the loop
        return PlainTextResponse("synced")

    async def sync_on_loop(request: Request) -> Response:
        request.session["n"] = -4
        request.session.sync()  # on the loop: its write waits for the response start
        return PlainTextResponse("synced")

    async def alogout(request: Request) -> Response:
        await request.session.ainvalidate()
        return PlainTextResponse("bye")

    async def alogin(request: Request) -> Response:
        await request.session.arotate_id()
        return PlainTextResponse("hi")

    async def async_sync(request: Request) -> Response:
        request.session["n"] = -5
        await request.session.async_sync()
        return PlainTextResponse("synced")

    routes = [
        Route("/incr", incr, methods=["POST"]),
        Route("/sync-on-loop", sync_on_loop, methods=["POST"]),
        Route("/alogout", alogout, methods=["POST"]),
        Route("/alogin", alogin, methods=["POST"]),
        Route("/async-sync", async_sync, methods=["POST"]),
        Route("/incr-sync", incr_sync, methods=["POST"]),
        Route("/read", read),
        Route("/fail", fail, methods=["POST"]),
        Route("/boom", boom, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/login", login, methods=["POST"]),
        Route("/sync", sync, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    if with_middleware:
        app.add_middleware(SessionMiddleware, manager=manager, app_name="shop")
    return app


@pytest.fixture
def manager() -> Iterator[sk.SessionManager]:
    m = sk.SessionManager("memory://", node="a", housekeeping=False, clock=sk.FakeClock())
    yield m
    m.close()


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_session_round_trip_sets_cookie_once(manager: sk.SessionManager) -> None:
    async with client(make_app(manager)) as c:
        r = await c.post("/incr")
        assert r.json() == {"n": 1}
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("sessionid=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert ".a;" in cookie.split(" ")[0] + ";"  # the id names this node
        r = await c.post("/incr")
        assert r.json() == {"n": 2}
        assert "set-cookie" not in r.headers
        assert (await c.post("/incr-sync")).json() == {"n": 3}
    assert manager.store.count("shop", now=manager.clock.time()) == 1


async def test_read_only_request_creates_nothing(manager: sk.SessionManager) -> None:
    async with client(make_app(manager)) as c:
        r = await c.get("/read")
    assert r.json() == {"n": None}
    assert "set-cookie" not in r.headers
    assert manager.store.count("shop", now=manager.clock.time()) == 0


async def test_write_happens_before_the_response_is_sent(manager: sk.SessionManager) -> None:
    seen: list[int] = []

    async def spy_send(message: Any) -> None:
        if message["type"] == "http.response.start":
            seen.append(manager.store.count("shop", now=manager.clock.time()))

    app = make_app(manager)
    scope = {
        "type": "http", "method": "POST", "path": "/incr", "headers": [], "query_string": b"",
        "scheme": "http", "server": ("t", 80), "client": ("c", 1), "root_path": "",
        "http_version": "1.1", "asgi": {"version": "3.0"},
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    await app(scope, receive, spy_send)
    assert seen == [1]


class ThreadsStore(MemoryStore):
    """Records the thread of every save, and of every store operation (each goes through
    ``Store._call``): the "never on the event loop" detector."""

    def __init__(self) -> None:
        super().__init__()
        self.save_threads: list[int] = []
        self.op_threads: list[tuple[str, int]] = []

    def _call(self, op: str, fn: Any, *, mark_failing: bool = True) -> Any:
        self.op_threads.append((op, threading.get_ident()))
        return super()._call(op, fn, mark_failing=mark_failing)

    def _save_batch(self, requests: Any) -> Any:
        self.save_threads.append(threading.get_ident())
        return super()._save_batch(requests)


def on_loop(store: ThreadsStore, loop_thread: int) -> list[str]:
    """The store operations that ran on the event loop's thread."""
    return [op for op, thread in store.op_threads if thread == loop_thread]


@pytest.mark.parametrize("policy", [sk.OnAttribute(), sk.AfterUpdates(1)], ids=lambda p: p.spec())
async def test_inline_writes_never_run_on_the_event_loop(policy: sk.WritePolicy) -> None:
    """Under OnAttribute and AfterUpdates a set writes inside the call; in an async endpoint that
    call runs on the loop, so the write waits for the end of the request (a worker thread),
    still before the response is sent."""
    store = ThreadsStore()
    m = sk.SessionManager(store, node="a", housekeeping=False, write=policy)
    loop_thread = threading.get_ident()
    seen: list[bytes | None] = []

    async def spy_send(message: Any) -> None:
        if message["type"] == "http.response.start":
            cookie = dict(message["headers"])[b"set-cookie"].decode()
            token = cookie.split("=", 1)[1].split(".", 1)[0]
            stored = store.load("shop", token)
            seen.append(None if stored is None else stored.attributes.get("n"))

    scope = {
        "type": "http", "method": "POST", "path": "/incr", "headers": [], "query_string": b"",
        "scheme": "http", "server": ("t", 80), "client": ("c", 1), "root_path": "",
        "http_version": "1.1", "asgi": {"version": "3.0"},
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    try:
        await make_app(m)(scope, receive, spy_send)
        async with client(make_app(m)) as c:
            await c.post("/incr")
            await c.post("/incr")
            assert (await c.post("/incr-sync")).json() == {"n": 3}
    finally:
        m.close()
    assert seen == [b"1"]  # written before the response went out
    assert store.save_threads and loop_thread not in store.save_threads


OPERATIONS = ["/logout", "/login", "/sync-on-loop", "/alogout", "/alogin", "/async-sync"]


@pytest.mark.parametrize("route", OPERATIONS)
@pytest.mark.parametrize("policy", [sk.EndOfRequest(), sk.TimeBased(10)], ids=lambda p: p.spec())
async def test_session_operations_never_do_store_io_on_the_event_loop(
    route: str, policy: sk.WritePolicy
) -> None:
    """invalidate(), rotate_id() and sync() called in an async endpoint (the plain forms, on the
    loop) leave their store work to the response start, in a worker thread; the awaitable forms
    run it in a worker thread at once. Either way it is done before the response goes out."""
    store = ThreadsStore()
    m = sk.SessionManager(store, node="a", housekeeping=False, write=policy)
    loop_thread = threading.get_ident()
    try:
        async with client(make_app(m)) as c:
            await c.post("/incr")
            first = c.cookies["sessionid"]
            token = first.split(".", 1)[0]
            store.op_threads.clear()
            r = await c.post(route)
            assert r.status_code == 200
            assert on_loop(store, loop_thread) == []
            assert store.op_threads  # the operation did reach the store
            if route.endswith("logout"):
                assert 'sessionid=""' in r.headers["set-cookie"]
                assert store.load("shop", token) is None
                assert m.store.count("shop", now=m.clock.time()) == 0
            elif route.endswith("login"):
                new = c.cookies["sessionid"]
                assert new != first and store.load("shop", token) is None
                stored = store.load("shop", new.split(".", 1)[0])
                assert stored is not None and stored.attributes["n"] == b"1"
            else:
                stored = store.load("shop", token)
                assert stored is not None and stored.attributes["n"] in (b"-4", b"-5")
    finally:
        m.close()


async def test_an_operation_on_the_loop_is_done_before_the_response_starts() -> None:
    """The deferred store work of a plain rotate_id() on the loop is in the store when the
    response starts, as the operation's own write would have been."""
    store = ThreadsStore()
    m = sk.SessionManager(store, node="a", housekeeping=False, write=sk.TimeBased(10))
    seen: list[tuple[bool, bool]] = []
    app = make_app(m)
    try:
        async with client(app) as c:
            await c.post("/incr")
            old = c.cookies["sessionid"].split(".", 1)[0]
            cookie = f"sessionid={c.cookies['sessionid']}".encode()

        async def spy_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                cookie = dict(message["headers"])[b"set-cookie"].decode()
                new = cookie.split("=", 1)[1].split(".", 1)[0]
                seen.append((store.load("shop", old) is None, store.load("shop", new) is not None))

        scope = {
            "type": "http", "method": "POST", "path": "/login", "query_string": b"",
            "headers": [(b"cookie", cookie)], "scheme": "http", "server": ("t", 80),
            "client": ("c", 1), "root_path": "", "http_version": "1.1", "asgi": {"version": "3.0"},
        }  # fmt: skip

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        await app(scope, receive, spy_send)
    finally:
        m.close()
    assert seen == [(True, True)]


@pytest.mark.parametrize("path", ["/fail", "/boom"])
async def test_5xx_and_exceptions_roll_back(manager: sk.SessionManager, path: str) -> None:
    async with client(make_app(manager)) as c:
        await c.post("/incr")
        r = await c.post(path)
        assert r.status_code == 500
        assert (await c.get("/read")).json() == {"n": 1}


async def test_failover_to_another_node_reads_the_store() -> None:
    store = MemoryStore()
    a = sk.SessionManager(store, node="a", housekeeping=False)
    b = sk.SessionManager(store, node="b", housekeeping=False)
    async with client(make_app(a)) as ca:
        await ca.post("/incr")
        await ca.post("/incr")
        cookie = ca.cookies["sessionid"]
    async with client(make_app(b)) as cb:
        cb.cookies.set("sessionid", cookie)
        r = await cb.post("/incr")
        assert r.json() == {"n": 3}
        assert r.headers["set-cookie"].split(";")[0].endswith(".b")  # affinity moves to b
    assert b.stats()["failovers"] == 1


async def test_cache_hit_stays_on_the_loop(manager: sk.SessionManager) -> None:
    threads: set[str] = set()
    original = manager.lifecycle.begin_request

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.add(threading.current_thread().name)
        return original(*args, **kwargs)

    manager.lifecycle.begin_request = spy  # type: ignore[method-assign]
    async with client(make_app(manager)) as c:
        await c.post("/incr")  # new session: no id, a cache miss path is never needed either
        before = len(threads)
        for _ in range(5):
            await c.get("/read")
        assert len(threads) == before  # every later request was a cache hit on the loop


async def test_store_down_for_an_uncached_session_is_503() -> None:
    store = FlakyStore()
    m = sk.SessionManager(store, node="a", housekeeping=False)
    async with client(make_app(m)) as c:
        await c.post("/incr")
        cookie = c.cookies["sessionid"]
    other = sk.SessionManager(store, node="b", housekeeping=False)
    store.down = True
    async with client(make_app(other)) as c:
        c.cookies.set("sessionid", cookie)
        r = await c.get("/read")
    assert r.status_code == 503
    assert r.headers["retry-after"] == str(other.retry_after_s)


@pytest.mark.parametrize("route", ["/login", "/logout", "/sync", *OPERATIONS[2:]])
async def test_a_session_operation_during_an_outage_is_503(route: str) -> None:
    store = FlakyStore()
    m = sk.SessionManager(store, node="a", housekeeping=False)
    async with client(make_app(m)) as c:
        await c.post("/incr")
        store.down = True
        r = await c.post(route)
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
        assert r.content == b"Session store unavailable, please retry.\n"
        assert "set-cookie" not in r.headers and m.stats()["unavailable"] == 1
        store.down = False
        assert (await c.get("/read")).json() == {"n": 1}
    m.close()


async def test_logout_deletes_the_cookie_and_login_rotates(manager: sk.SessionManager) -> None:
    async with client(make_app(manager)) as c:
        await c.post("/incr")
        first = c.cookies["sessionid"]
        r = await c.post("/login")
        assert c.cookies["sessionid"] != first
        assert (await c.get("/read")).json() == {"n": 1}
        r = await c.post("/logout")
        assert 'sessionid=""' in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]
    assert manager.store.count("shop", now=manager.clock.time()) == 0


async def test_lifespan_starts_housekeeping_and_shutdown_flushes() -> None:
    m = sk.SessionManager("memory://", node="a", write="manual")
    app = make_app(m)
    async with client(app) as c:
        await c.post("/incr")
        await c.post("/incr")
    stored_before = m.store.load("shop", next(iter(m._cache)).token)
    assert stored_before is not None  # written at creation
    sent: list[str] = []
    inbox = asyncio.Queue[dict[str, Any]]()
    await inbox.put({"type": "lifespan.startup"})
    await inbox.put({"type": "lifespan.shutdown"})

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert m._closed
    stored = m.store.load("shop", stored_before.token)
    assert stored is not None and stored.attributes["n"] == b"2"


async def test_concurrent_increments_lose_nothing_with_serialize_access() -> None:
    m = sk.SessionManager("memory://", node="a", serialize_access=True, housekeeping=False)
    async with client(make_app(m)) as c:
        await c.post("/incr")
        await asyncio.gather(*(c.post("/incr") for _ in range(50)))
        await asyncio.gather(*(c.post("/incr-sync") for _ in range(50)))
        assert (await c.get("/read")).json() == {"n": 101}
    m.close()


async def test_a_changed_request_whose_write_is_refused_answers_503() -> None:
    """Defect 13: under EndOfRequest a change that cannot be stored is not acknowledged."""
    store = WriteFailingStore()
    m = sk.SessionManager(store, node="a", housekeeping=False, outage_backoff_s=0)
    try:
        async with client(make_app(m)) as c:
            assert (await c.post("/incr")).json() == {"n": 1}
            store.writes_down = True
            r = await c.post("/incr")
            assert r.status_code == 503 and r.headers["retry-after"] == str(m.retry_after_s)
            assert r.content == b"Session store unavailable, please retry.\n"
            assert "set-cookie" not in r.headers
            assert (await c.get("/read")).json() == {"n": 1}  # rolled back; reads still served
            store.writes_down = False
            assert (await c.post("/incr")).json() == {"n": 2}
    finally:
        m.close()


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_a_websocket_operation_on_the_loop_is_stored_before_its_next_message() -> None:
    """A websocket has no response start: the store work of an invalidate() on the loop runs in
    a worker thread before the next message the endpoint sends goes out."""
    from starlette.routing import WebSocketRoute
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocket

    store = ThreadsStore()
    m = sk.SessionManager(store, node="a", housekeeping=False)
    loop_threads: list[int] = []

    async def ws(websocket: WebSocket) -> None:
        loop_threads.append(threading.get_ident())
        await websocket.accept()
        token = websocket.session.token
        store.op_threads.clear()
        websocket.session.invalidate()
        await websocket.send_text(token)
        await websocket.receive_text()
        await websocket.close()

    app = make_app(m)
    app.router.routes.append(WebSocketRoute("/ws", ws))
    try:
        with TestClient(app) as c:
            c.post("/incr")
            with c.websocket_connect("/ws") as conn:
                token = conn.receive_text()
                assert store.load("shop", token) is None  # deleted before the message went
                conn.send_text("bye")
    finally:
        m.close()
    ops = [op for op, _ in store.op_threads]
    assert "delete" in ops and on_loop(store, loop_threads[0]) == []


async def test_a_cached_request_hands_off_to_a_thread_only_to_write(
    manager: sk.SessionManager,
) -> None:
    """A cache hit begins on the loop: a request that reads makes no thread hop, one that
    writes makes one (its write), and a new session is begun on the loop too."""
    app = SessionMiddleware(make_app(manager, with_middleware=False), manager, "shop")
    hops: list[str] = []
    for pool in (app._begins, app._writes):
        run = pool.run

        async def spy(fn: Any, run: Any = run, name: str = pool.name) -> Any:
            hops.append(name)
            return await run(fn)

        pool.run = spy  # type: ignore[method-assign]
    async with client(app) as c:
        await c.post("/incr")
        assert hops == ["sessionkeeper-write"]  # the new session's write only
        hops.clear()
        assert (await c.get("/read")).json() == {"n": 1}
        assert hops == []
        assert (await c.post("/incr")).json() == {"n": 2}
        assert hops == ["sessionkeeper-write"]
