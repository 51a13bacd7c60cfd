"""ASGI middleware: ``scope["session"]``, so Starlette's and FastAPI's ``request.session`` work.

A drop-in for ``starlette.middleware.sessions.SessionMiddleware``::

    app.add_middleware(SessionMiddleware, manager=manager, app_name="shop")

or with Starlette's own arguments, unchanged (``secret_key`` is accepted and unused: the cookie
carries a random id, not signed data)::

    app.add_middleware(SessionMiddleware, secret_key="...", max_age=3600, https_only=True)

Given any of Starlette's names, Starlette's defaults apply to the ones not given (cookie
``session``, ``Max-Age`` 14 days, ``path=/``, ``samesite=lax``), on this middleware's own
``Tracking``; the attribute names are then written in lower case, as Starlette's. Without
``manager`` the middleware makes (and closes) a ``SessionManager`` with its defaults (the SQLite
file store) and ``max_age``, when positive, as the idle timeout. A ``max_age`` given is also each
session's absolute lifetime server side, as Starlette's signed cookie expires ``max_age`` after it
was made: a session's deadline, ``created_at + max_age``, is set at its request's response start
(0 or less: the next request finds it expired). The idle timeout is the manager's (``timeout_s``,
``app_timeouts_s``).
Responses whose request read, iterated or changed the session get ``Vary: Cookie``.

Ordering, as in :mod:`sessionkeeper.wsgi`: the session is written (when the policy says so) when the
application sends ``http.response.start``, before that message goes on, so under ``EndOfRequest``
every response the client sees is already in the store. A status of 500 or more, or an exception,
rolls the request's changes back. A request whose session is not cached while the store is down
gets ``503`` with ``Retry-After``; so does one whose ``rotate_id()``, ``invalidate()`` or ``sync()``
meets an outage (one of ``UNAVAILABLE_ERRORS``) before its response starts. Added with Starlette's
``add_middleware`` the middleware sees the app's exception first; wrapped around a whole Starlette
app it comes after Starlette's ``ServerErrorMiddleware``, which has already answered 500. A
changed request whose write cannot be made durable (``WriteRefused``) gets the 503 instead of the
application's response start, whose body messages are then dropped.

The event loop never blocks: a cached session is resolved on the loop (``begin_cached``); a miss,
a busy session (``serialize_access``) and every store write run in a worker thread. So a request
that finds its session cached hands off to a thread once if it wrote, and never if it did not.
On asyncio those threads are the middleware's own (:mod:`.workerthreads`: the hand-off costs
about half the CPU of anyio's); on another loop (trio), anyio's. Under
``OnAttribute`` and ``AfterUpdates`` a set or delete in an async endpoint does not write inside
the call (that would be on the loop): the write at the end of the request, in a worker thread,
carries it, still before ``http.response.start`` goes on. ``sync()``, ``invalidate()`` and
``rotate_id()`` called in an async endpoint do their in-memory part at once (a new id, an emptied
session) and their store work in a worker thread before the next message the app sends goes on
(the response start, a websocket's accept or message); a store that fails it makes the response
a 503, the request rolled back. ``await session.async_sync()``, ``ainvalidate()`` and
``arotate_id()`` run the whole operation in a worker thread, raising its errors in the endpoint.

Lifespan: housekeeping starts at ``lifespan.startup``; at ``lifespan.shutdown`` the manager is
closed (every dirty session written) before the server is told that shutdown is complete.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import anyio.to_thread

from .errors import UNAVAILABLE_ERRORS, WriteRefused
from .lifecycle import UNAVAILABLE_BODY, ActiveRequest
from .manager import SessionManager
from .tracking import Tracking, split_path_param
from .workerthreads import WorkerThreads

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_UNSET: Any = object()
#: Worker threads for the store writes and the session operations, per middleware (anyio's
#: default limit): a write waiting for the batch in flight holds one.
WRITE_THREADS = 40
#: What the response start answers with a 503: a refused write, or the store failing the store
#: work a ``sync()``, ``invalidate()`` or ``rotate_id()`` on the loop deferred to it.
_ANSWERED_503: tuple[type[BaseException], ...] = (WriteRefused, *UNAVAILABLE_ERRORS)
#: Starlette's ``SessionMiddleware`` defaults, for the names it takes.
STARLETTE_DEFAULTS: dict[str, Any] = {
    "session_cookie": "session",
    "max_age": 14 * 24 * 60 * 60,
    "path": "/",
    "same_site": "lax",
    "https_only": False,
    "domain": None,
    "partitioned": False,
}


class SessionMiddleware:
    """Wrap ``app``; sessions of ``app_name`` are kept by ``manager``.

    ``owner``, if given, returns the principal of a request from its scope: a session bound to
    another principal is then not served to it. ``close_on_shutdown=False`` leaves closing the
    manager to the caller (when it is shared by several apps).

    ``begin_threads`` bounds the worker threads that load sessions and wait for busy ones
    (``serialize_access``). They are kept apart from the ones that run the store writes
    (``WRITE_THREADS``): requests waiting for a session can then never starve the write that
    would free it.
    """

    def __init__(
        self,
        app: ASGIApp,
        manager: SessionManager | None = None,
        app_name: str = "default",
        *,
        scope_key: str = "session",
        owner: Callable[[Scope], str | None] | None = None,
        close_on_shutdown: bool = True,
        begin_threads: int = 100,
        secret_key: Any = _UNSET,
        session_cookie: str = _UNSET,
        max_age: int | None = _UNSET,
        path: str = _UNSET,
        same_site: str = _UNSET,
        https_only: bool = _UNSET,
        domain: str | None = _UNSET,
        partitioned: bool = _UNSET,
    ) -> None:
        given = {
            "session_cookie": session_cookie,
            "max_age": max_age,
            "path": path,
            "same_site": same_site,
            "https_only": https_only,
            "domain": domain,
            "partitioned": partitioned,
        }
        starlette = secret_key is not _UNSET or any(v is not _UNSET for v in given.values())
        options: dict[str, Any] = {
            k: STARLETTE_DEFAULTS[k] if v is _UNSET else v for k, v in given.items()
        }
        if manager is None:
            age = options["max_age"] if starlette else None
            manager = SessionManager(timeout_s=float(age)) if age and age > 0 else SessionManager()
        self.app = app
        self.manager = manager
        #: Starlette's ``max_age``, when given: each session's absolute lifetime.
        self.max_lifetime_s: float | None = None if max_age in (_UNSET, None) else float(max_age)
        #: This middleware's own cookie options (Starlette's names), else the manager's.
        self.tracking: Tracking | None = (
            _starlette_tracking(manager, options) if starlette else None
        )
        self.app_name = app_name
        self.scope_key = scope_key
        self.owner = owner
        self.close_on_shutdown = close_on_shutdown
        self.begin_threads = begin_threads
        self._begin_limiter: anyio.CapacityLimiter | None = None  # off asyncio
        self._begins = WorkerThreads(begin_threads, name="sessionkeeper-begin")
        self._writes = WorkerThreads(WRITE_THREADS, name="sessionkeeper-write")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), self._lifespan_send(send))
        elif scope["type"] in ("http", "websocket"):
            await self._request(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # -- requests -------------------------------------------------------------------------------

    async def _request(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Inline writes wait for the request's end, the operations' store work for the next
        # message; the awaitable operations run in the write threads, as the writes do.
        self.manager.lifecycle.mark_event_loop(self._in_write_thread)
        tracking = self.tracking or self.manager.tracking
        path_id = None
        if tracking.uses_url:
            scope = dict(scope)
            scope["path"], path_id = split_path_param(scope.get("path", ""), tracking.url_param)
        headers = _headers(scope)
        session_id = tracking.read(
            cookie_header=headers.get("cookie"),
            path_param=path_id,
            header_value=headers.get(tracking.header_name.lower()),
        )
        owner = self.owner(scope) if self.owner else None
        try:
            active = await self._begin(session_id, owner)
        except UNAVAILABLE_ERRORS:
            await self._refuse(scope, send)
            return
        scope[self.scope_key] = active.session
        https = scope.get("scheme") in ("https", "wss")
        write_refused = False

        started: list[bool] = []  # whether a response (or websocket accept) went on

        async def session_send(message: Message) -> None:
            nonlocal write_refused
            if write_refused:
                return  # the application's body, after a 503 took its response's place
            if message["type"] in ("http.response.start", "websocket.accept"):
                started.append(True)
            if message["type"] == "http.response.start":
                try:
                    self._apply_lifetime(active)
                    await self._finish(active, ok=message["status"] < 500)
                except _ANSWERED_503:
                    write_refused = True
                    await _unavailable(send, self.manager.lifecycle.refuse())
                    return
                message = dict(message)
                message["headers"] = [
                    *message.get("headers", []),
                    *self._cookie_headers(active, https),
                ]
            else:  # the store work of a sync(), invalidate() or rotate_id() on the loop
                deferred = self.manager.lifecycle.deferred(active)
                if deferred is not None:
                    await self._in_write_thread(deferred)
            if message["type"] == "websocket.accept":
                message = dict(message)
                message["headers"] = [
                    *message.get("headers", []),
                    *self._cookie_headers(active, https),
                ]
            await send(message)

        try:
            await self.app(scope, receive, session_send)
        except UNAVAILABLE_ERRORS:  # rotate_id(), invalidate(), sync() in the app: store down
            with anyio.CancelScope(shield=True):
                await self._finish(active, ok=False)
            if started:  # too late for a 503: the server answers what it does for an error
                raise
            await self._refuse(scope, send)
            return
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._finish(active, ok=False)
            raise
        # A websocket ends here; an http app that never started a response failed.
        await self._finish(active, ok=scope["type"] == "websocket")

    async def _refuse(self, scope: Scope, send: Send) -> None:
        refused = self.manager.lifecycle.refuse()
        if scope["type"] == "http":
            await _unavailable(send, refused)
        else:
            await send({"type": "websocket.close", "code": 1013})  # try again later

    async def _begin(self, session_id: str | None, owner: str | None) -> ActiveRequest:
        active = self.manager.lifecycle.begin_cached(self.app_name, session_id, owner=owner)
        if active is not None:
            return active
        begin = functools.partial(
            self.manager.lifecycle.begin_request, self.app_name, session_id, owner=owner
        )
        # Shielded: a request cancelled while its session loads must still end it, later.
        with anyio.CancelScope(shield=True):
            begun: ActiveRequest = await self._in_begin_thread(begin)
        self.manager.lifecycle.bind(begun)
        return begun

    def _apply_lifetime(self, active: ActiveRequest) -> None:
        """Give a real session without a deadline ``created_at + max_lifetime_s``: metadata,
        written with this request's write (no I/O here). One already past still sends the
        cookie, as Starlette's does; the next request finds the session expired."""
        s = active.session
        if self.max_lifetime_s is None or not s.created or s.absolute_expires_at is not None:
            return
        s.record_deadline(s.created_at + self.max_lifetime_s)

    async def _finish(self, active: ActiveRequest, *, ok: bool) -> None:
        pending = self.manager.lifecycle.finish_request(active, ok=ok)
        if pending is not None:
            await self._in_write_thread(pending)

    async def _in_write_thread(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` (a write, a session operation's store work) in a worker thread; a
        cancellation of the caller waits for it to return, as anyio's does."""
        if _on_asyncio():
            return await self._writes.run(fn)
        return await anyio.to_thread.run_sync(fn)

    async def _in_begin_thread(self, fn: Callable[[], ActiveRequest]) -> ActiveRequest:
        if _on_asyncio():
            return await self._begins.run(fn)
        if self._begin_limiter is None:
            self._begin_limiter = anyio.CapacityLimiter(self.begin_threads)
        return await anyio.to_thread.run_sync(fn, limiter=self._begin_limiter)

    def _cookie_headers(self, active: ActiveRequest, https: bool) -> list[tuple[bytes, bytes]]:
        headers = self.manager.lifecycle.response_headers(
            active, https=https, tracking=self.tracking
        )
        return [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
        ]

    # -- lifespan -------------------------------------------------------------------------------

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.manager.start()
            return message

        return lifespan_receive

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete" and self.close_on_shutdown:
                await anyio.to_thread.run_sync(self.manager.close)
            await send(message)

        return lifespan_send


def _starlette_tracking(manager: SessionManager, options: dict[str, Any]) -> Tracking:
    """The manager's ``Tracking`` with Starlette's cookie options in place of its own."""
    return dataclasses.replace(
        manager.tracking,
        cookie_name=options["session_cookie"],
        cookie_max_age_s=options["max_age"],
        cookie_path=options["path"],
        cookie_samesite=options["same_site"],
        # Starlette's https_only=False never sets Secure; ours still does over https.
        cookie_secure=True if options["https_only"] else None,
        cookie_domain=options["domain"],
        cookie_partitioned=options["partitioned"],
        attribute_case="lower",
    )


def _on_asyncio() -> bool:
    """Whether the caller runs on an asyncio event loop (not trio)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers by lower-case name; repeated ``Cookie`` headers are joined (HTTP/2)."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name in out and name == "cookie":
            out[name] = f"{out[name]}; {value}"
        else:
            out.setdefault(name, value)
    return out


async def _unavailable(send: Send, headers: list[tuple[str, str]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": UNAVAILABLE_BODY})
