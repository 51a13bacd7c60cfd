"""``Lifecycle``: the protocol between the web adapters and the manager (``manager.lifecycle``).

One request, in this order::

    begin_request | begin_cached  ->  [bind]  ->  finish_request (+ its write) | end_request
                                                ->  cookie_action | response_headers

``begin_*`` returns an :class:`ActiveRequest`, the request's hold on its session; every later
call takes that hold. ``refuse`` answers a request whose ``begin_*`` raised one of
``UNAVAILABLE_ERRORS``; ``exists`` is a query outside any request.

Store I/O: ``begin_request``, ``end_request``, ``exists`` and the callable ``finish_request``
returns may read or write the store, and must run in a worker thread under an event loop.
``begin_cached``, ``enter(wait=False)``, ``finish_request`` itself, ``bind``, ``cookie_action``,
``response_headers``, ``refuse`` and ``mark_event_loop`` never touch the store and never block,
so an async adapter calls them on the loop (``begin_cached`` answers ``None`` when only
``begin_request`` can help). An async adapter calls ``mark_event_loop`` on the loop before the
application runs: a set or delete that the policy writes inline (``OnAttribute``,
``AfterUpdates``) is then left, on the loop, to the write at the end of the request.

Thread safety: every method may be called from any thread; one hold is used by one request at a
time. ``bind`` makes the calling thread or task the one whose failure undoes the hold's changes.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from . import ids
from .errors import AccessTimeout
from .runtime import Runtime
from .session import Session, current_request

_request_ids = itertools.count(1)

#: The body of the 503 answered when a request's session cannot be had (see ``refuse``).
UNAVAILABLE_BODY = b"Session store unavailable, please retry.\n"

#: The thread of the event loop serving this context's request, if an async adapter said so. A
#: worker thread that the adapter runs blocking calls in inherits the context, not the thread.
_event_loop_thread: ContextVar[int | None] = ContextVar("sessionkeeper_event_loop", default=None)


def on_event_loop() -> bool:
    """Whether the caller runs on the event loop of an async adapter's request (where no store
    call may run)."""
    return _event_loop_thread.get() == threading.get_ident()


#: ``(app, session_id, owner, allow_io) -> Session``; ``None`` only without ``allow_io``.
Resolve = Callable[[str, "str | None", "str | None", bool], "Session | None"]


@dataclass(eq=False, slots=True)
class ActiveRequest:
    """One request's hold on its session, from ``begin_request`` to ``end_request``."""

    session: Session
    rid: int
    updates_at_start: int
    locked: bool = False
    ended: bool = False


class Lifecycle:
    def __init__(self, rt: Runtime, resolve: Resolve, on_begin: Callable[[], None]) -> None:
        self._rt = rt
        self._resolve = resolve
        self._on_begin = on_begin  # starts housekeeping in this process

    def begin_request(
        self, app: str = "default", session_id: str | None = None, *, owner: str | None = None
    ) -> ActiveRequest:
        """Resolve the session (loading it from the store when needed) and hold it.

        Raises :class:`StoreUnavailable` when the session is not cached and the store is down
        (adapters answer 503), :class:`AccessTimeout` with ``serialize_access``."""
        self._on_begin()
        session = self._resolve(app, session_id, owner, True)
        assert session is not None  # allow_io always resolves
        active = self.enter(session, wait=True)
        assert active is not None  # wait=True raises instead
        return active

    def begin_cached(
        self, app: str = "default", session_id: str | None = None, *, owner: str | None = None
    ) -> ActiveRequest | None:
        """Like :meth:`begin_request` but never blocks or touches the store: ``None`` when the
        store must be read or the session is busy. Async adapters call this on the event loop and
        fall back to ``begin_request`` in a worker thread."""
        self._on_begin()
        session = self._resolve(app, session_id, owner, False)
        if session is None:
            return None
        return self.enter(session, wait=False)

    def enter(self, session: Session, *, wait: bool) -> ActiveRequest | None:
        """Hold ``session`` for a new request (``None`` when busy and not ``wait``)."""
        settings = self._rt.settings
        locked = False
        if settings.serialize_access:
            if wait:
                locked = session.access_lock.acquire(timeout=settings.access_wait_s)
                if not locked:
                    self._rt.stats.add("access_timeouts")
                    raise AccessTimeout(
                        f"session busy for more than access_wait_s={settings.access_wait_s:g}"
                    )
            elif not session.access_lock.acquire(blocking=False):
                return None
            else:
                locked = True
        rid = next(_request_ids)
        current_request.set(rid)
        now = self._rt.clock.time()
        with session.lock:
            session.begin_undo(rid)
            session.active_requests += 1
            if session.created:
                session.last_access_at = max(session.last_access_at, now)
                session.requests_since_write += 1
        return ActiveRequest(session, rid, session.updates_since_write, locked)

    def end_request(self, active: ActiveRequest, *, ok: bool) -> None:
        """Finish a request: ``ok`` means the response succeeded (status < 500, no exception).
        Writes now when the policy says so; a failed store write keeps the session dirty."""
        pending = self.finish_request(active, ok=ok)
        if pending is not None:
            pending()

    def finish_request(self, active: ActiveRequest, *, ok: bool) -> Callable[[], None] | None:
        """The I/O-free part of :meth:`end_request`; returns the write to run, if any (async
        adapters run it in a worker thread)."""
        if active.ended:
            return None
        active.ended = True
        s = active.session
        try:
            write = self._settle(active, ok)
        finally:
            with s.lock:
                s.active_requests -= 1
                s.is_new = False
            if active.locked:
                s.access_lock.release()
            if current_request.get() == active.rid:
                current_request.set(None)
        if write and self._rt.store_failing():
            write = False
        replicator = self._rt.replicator if s.created else None
        if not write and replicator is None and self._rt.cache.over_capacity() <= 0:
            return None

        def pending() -> None:
            if write:
                self._rt.write([s], immediate=True)
            if replicator is not None:
                replicator.after_request(s)  # with ack="sync", the backups have it on return
            self._rt.evict_over_capacity()

        return pending

    def _settle(self, active: ActiveRequest, ok: bool) -> bool:
        """Keep or undo the request's changes; whether the session must be written now."""
        s, rules = active.session, self._rt.rules
        if ok:
            s.end_undo(active.rid, revert=False)
            if s.created:
                if rules.write_at_request_end(s, self._rt.clock.monotonic()):
                    return True
                if s.updates_since_write > active.updates_at_start:
                    self._rt.stats.add("writes_saved")
            return False
        if s.end_undo(active.rid, revert=True):
            self._rt.stats.add("reverted_requests")
        if rules.discard_after_failure(s):
            self._rt.cache.remove((s.app, s.token), s)
            s.created = False
            s.replace_data({})
            return False
        return rules.write_after_failure(s)

    def bind(self, active: ActiveRequest) -> None:
        """Make the calling thread or task the one serving ``active``, so that its changes are
        undone when the request fails. Async adapters call it on the event loop after
        ``begin_request`` ran in a worker thread (a context variable does not flow back)."""
        if not active.ended:
            current_request.set(active.rid)

    def mark_event_loop(self) -> None:
        """Say that the calling thread runs an event loop, for the current context (the
        request's task and the tasks it starts): the session's inline writes then wait for the
        end of the request, whose write the adapter runs in a worker thread."""
        _event_loop_thread.set(threading.get_ident())

    def exists(self, app: str, session_id: str | None) -> bool:
        """Whether ``session_id`` names a live session of ``app``, here or in the store. Touches
        nothing: neither the access time nor the cache."""
        parsed = ids.parse(session_id)
        if parsed is None:
            return False
        now = self._rt.clock.time()
        cached = self._rt.cache.get((app, parsed[0]))
        if cached is not None and cached.created and not cached.expired(now):
            return True
        stored = self._rt.store.load(app, parsed[0])
        return stored is not None and now - stored.last_access_at <= stored.timeout_s

    def cookie_action(self, active: ActiveRequest) -> str | None:
        """What the response must do with the id: ``"set"`` (new or changed id), ``"delete"``
        (the presented session no longer exists and none was created), or ``None``."""
        session = active.session
        if session.created:
            return "set" if session.presented_id != session.id else None
        presented = ids.parse(session.presented_id)
        if presented is not None and self._rt.cache.other_app_holds(session.app, presented[0]):
            return None  # the id still names another app's session
        return "delete" if session.presented_id else None

    def response_headers(self, active: ActiveRequest, *, https: bool) -> list[tuple[str, str]]:
        """The headers that carry the id back (``Set-Cookie``, and the id header in header
        mode), per :meth:`cookie_action`; empty when the id did not change."""
        action = self.cookie_action(active)
        if action is None:
            return []
        session_id = active.session.id if action == "set" else None
        tracking = self._rt.settings.tracking
        assert tracking is not None  # Settings gave the default
        return tracking.response_headers(session_id, https=https)

    def refuse(self) -> list[tuple[str, str]]:
        """Count a request whose session could not be had (one of ``UNAVAILABLE_ERRORS``) and
        return the headers of its ``503 Service Unavailable``; the body is
        :data:`UNAVAILABLE_BODY`. Never a 500, never a silently empty session."""
        self._rt.stats.add("unavailable")
        return [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(UNAVAILABLE_BODY))),
            ("Retry-After", str(self._rt.settings.retry_after_s)),
        ]
