"""``Lifecycle``: the protocol between the web adapters and the manager (``manager.lifecycle``).

One request, in this order::

    begin_request | begin_cached  ->  [bind]  ->  finish_request (+ its write) | end_request
                                                ->  cookie_action | response_headers

``begin_*`` returns an :class:`ActiveRequest`, the request's hold on its session; every later
call takes that hold. ``refuse`` answers a request whose ``begin_*`` raised one of
``UNAVAILABLE_ERRORS``; ``exists`` is a query outside any request.

Store I/O: ``begin_request``, ``end_request``, ``exists`` and the callables ``finish_request``
and ``deferred`` return may read or write the store, and must run in a worker thread under an
event loop.
``begin_cached``, ``enter(wait=False)``, ``finish_request`` itself, ``bind``, ``cookie_action``,
``response_headers``, ``refuse`` and ``mark_event_loop`` never touch the store and never block,
so an async adapter calls them on the loop (``begin_cached`` answers ``None`` when only
``begin_request`` can help). An async adapter calls ``mark_event_loop`` on the loop before the
application runs: a set or delete that the policy writes inline (``OnAttribute``,
``AfterUpdates``) is then left, on the loop, to the write at the end of the request, and the
store work of ``sync()``, ``invalidate()`` and ``rotate_id()`` to ``deferred`` (the adapter runs
it before its next message) or the end of the request (:mod:`.offloop`).

Refusal: ``begin_*`` raise ``UNAVAILABLE_ERRORS`` (``ManagerClosed`` after ``close()``);
``end_request``, and the callable ``finish_request`` returns, raise :class:`WriteRefused` when a
request that changed its session cannot have the change stored under
``on_write_failure="refuse"``: its changes are rolled back, and the adapter answers ``refuse()``'s
503 instead of the application's response.

Thread safety: every method may be called from any thread; one hold is used by one request at a
time. ``bind`` makes the calling thread or task the one whose failure undoes the hold's changes.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from . import ids, logs, offloop
from .errors import AccessTimeout, StoreError
from .logs import fields, session_hash
from .runtime import Runtime
from .session import Session, current_request
from .settle import Settle
from .tracking import Tracking

log = logging.getLogger("sessionkeeper")

_request_ids = itertools.count(1)

#: The body of the 503 answered when a request's session cannot be had (see ``refuse``).
UNAVAILABLE_BODY = b"Session store unavailable, please retry.\n"

#: ``(app, session_id, owner, allow_io, now) -> Session``; ``None`` only without ``allow_io``.
#: ``now`` is the request's wall-clock reading, taken once (it is also its access time).
Resolve = Callable[[str, "str | None", "str | None", bool, float], "Session | None"]


@dataclass(eq=False, slots=True)
class ActiveRequest:
    """One request's hold on its session, from ``begin_request`` to ``end_request``. What is
    about one request (the id it presented, whether it created the session) lives here, not on
    the ``Session``, which concurrent requests of one session share."""

    session: Session
    rid: int
    updates_at_start: int
    locked: bool = False
    ended: bool = False
    #: The id the request presented (cookie, URL or header), valid or not.
    presented_id: str | None = None
    #: Whether the request read, iterated or changed its session (set when it ends): its
    #: response then varies with the cookie (``Vary: Cookie``).
    accessed: bool = False
    #: Whether a session this request empties (logout by ``clear()``, the last key popped) ends
    #: as by ``invalidate()``. Django's adapter turns it off: there an emptied session keeps its
    #: key, and ``flush()`` ends it.
    end_when_emptied: bool = True
    #: Store work of ``sync()``, ``invalidate()``, ``rotate_id()`` called on an event loop
    #: (``offloop.defer``), run by :meth:`Lifecycle.deferred` or the request's end.
    deferred: list[Callable[[], None]] = field(default_factory=list)

    #: ``is_new`` as it was when the request let go of its session (the session forgets which
    #: request created it once no request holds it).
    new_at_end: bool | None = None

    @property
    def is_new(self) -> bool:
        """Whether this request created its session (Flask's ``session.new``)."""
        if self.new_at_end is not None:
            return self.new_at_end
        return self.session.created and self.session.created_by == self.rid


class Lifecycle:
    def __init__(self, rt: Runtime, resolve: Resolve, on_begin: Callable[[], None]) -> None:
        self._rt = rt
        self._resolve = resolve
        self._on_begin = on_begin  # starts housekeeping in this process
        self._settle = Settle(rt)
        self._clock = rt.clock  # fixed per manager (frozen settings): read once, not per request

    def begin_request(
        self, app: str = "default", session_id: str | None = None, *, owner: str | None = None
    ) -> ActiveRequest:
        """Resolve the session (loading it from the store when needed) and hold it.

        Raises :class:`StoreUnavailable` when the session is not cached and the store is down
        (adapters answer 503), :class:`AccessTimeout` with ``serialize_access``,
        :class:`ManagerClosed` once the manager was closed."""
        rt = self._rt
        token = logs.act(rt)  # acting_node, inline: this is every request's path
        try:
            if rt.closed:
                rt.check_open()
            self._on_begin()
            now = self._clock.time()
            session = self._resolve(app, session_id, owner, True, now)
            assert session is not None  # allow_io always resolves
            active = self.enter(session, wait=True, presented_id=session_id, now=now)
            assert active is not None  # wait=True raises instead
            return active
        finally:
            if token is not None:
                logs.unact(token)

    @logs.acting_node
    def begin_cached(
        self, app: str = "default", session_id: str | None = None, *, owner: str | None = None
    ) -> ActiveRequest | None:
        """Like :meth:`begin_request` but never blocks or touches the store: ``None`` when the
        store must be read or the session is busy. Async adapters call this on the event loop and
        fall back to ``begin_request`` in a worker thread."""
        self._rt.check_open()
        self._on_begin()
        now = self._clock.time()
        session = self._resolve(app, session_id, owner, False, now)
        if session is None:
            return None
        return self.enter(session, wait=False, presented_id=session_id, now=now)

    def enter(
        self,
        session: Session,
        *,
        wait: bool,
        presented_id: str | None = None,
        now: float | None = None,
    ) -> ActiveRequest | None:
        """Hold ``session`` for a new request (``None`` when busy and not ``wait``);
        ``presented_id`` is the id the request came with, for its cookie decision; ``now``, the
        request's wall-clock reading if it took one (its access time; read again after waiting
        for the access lock)."""
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
        if now is None or locked:
            now = self._clock.time()
        with session.changes:  # the session's lock
            session.begin_undo(rid)
            session.active_requests += 1
            if session.created and now > session.last_access_at:
                session.last_access_at = now
        active = ActiveRequest(session, rid, session.changes.updates, locked, False, presented_id)
        offloop.hold(active.deferred)
        return active

    def end_request(self, active: ActiveRequest, *, ok: bool) -> None:
        """Finish a request: ``ok`` means the response succeeded (status < 500, no exception).
        Writes now when the policy says so. A failed store write keeps the session dirty, or,
        under ``on_write_failure="refuse"`` for a request that changed it, rolls the request's
        changes back and raises :class:`WriteRefused` (the adapter answers 503)."""
        token = logs.act(self._rt)  # acting_node, inline: this is every request's path
        try:
            pending = self._finish(active, ok)
            if pending is not None:
                pending()
        finally:
            if token is not None:
                logs.unact(token)

    @logs.acting_node
    def finish_request(self, active: ActiveRequest, *, ok: bool) -> Callable[[], None] | None:
        """The I/O-free part of :meth:`end_request`; returns the write to run, if any (async
        adapters run it in a worker thread; it may raise :class:`WriteRefused`). A refusable
        write keeps the hold, and its undo log, until it has run."""
        return self._finish(active, ok)

    def _finish(self, active: ActiveRequest, ok: bool) -> Callable[[], None] | None:
        if active.ended:
            return None
        deferred = offloop.take(active.deferred) if active.deferred else None
        if deferred is not None:  # an operation's store work first; it failing fails the request
            return lambda: self._after_deferred(active, deferred, ok)
        active.ended = True
        s = active.session
        active.accessed = s.accessed_in(active.rid)
        # len(s) first: Settle.emptied's own cheapest test, without its call for a session
        # that still holds keys (nearly every request).
        emptied = ok and active.end_when_emptied and not len(s) and self._settle.emptied(active)
        guarded = False
        try:
            if emptied:
                s.end_undo(active.rid, revert=False)
                write, guarded = False, True
            else:
                write, guarded = self._settle.settle(active, ok)
        finally:
            if not guarded:
                self._settle.release(active)
            if current_request.get() == active.rid:
                current_request.set(None)
        if emptied:
            return lambda: self._settle.end_emptied(active)
        if guarded:
            return lambda: self._settle.write_or_refuse(active)
        if write and self._rt.store_failing():
            write = False
        replicator = self._rt.replicator if s.created else None
        if not write and replicator is None and self._rt.cache.over_capacity() <= 0:
            return None

        def pending() -> None:
            if write:
                self._rt.write_at_request_end(s)
            if replicator is not None:
                try:  # with ack="sync", the backups have it on return
                    replicator.after_request(s)
                except StoreError as exc:  # a deferred policy: the store gets it later
                    log.warning(
                        "session %s not replicated: %s",
                        session_hash(s.app, s.token),
                        exc,
                        extra=fields(s.app, s.token, exc.code),
                    )
            self._rt.evict_over_capacity()

        return pending

    def _after_deferred(
        self, active: ActiveRequest, deferred: Callable[[], None], ok: bool
    ) -> None:
        try:
            deferred()
        except BaseException:
            self.end_request(active, ok=False)  # rolled back, as when the call raised in the app
            raise
        self.end_request(active, ok=ok)

    def bind(self, active: ActiveRequest) -> None:
        """Make the calling thread or task the one serving ``active``, so that its changes are
        undone when the request fails. Async adapters call it on the event loop after
        ``begin_request`` ran in a worker thread (a context variable does not flow back)."""
        if not active.ended:
            current_request.set(active.rid)
            offloop.hold(active.deferred)

    def mark_event_loop(self, run_in_thread: offloop.RunInThread | None = None) -> None:
        """Say that the calling thread runs an event loop, for the current context (the
        request's task and the tasks it starts), and how the adapter runs a blocking call in a
        worker thread (the awaitable session operations use it). The session's inline writes
        then wait for the end of the request, and the store work of ``sync()``,
        ``invalidate()`` and ``rotate_id()`` for :meth:`deferred` or the request's end; the
        adapter runs both in a worker thread."""
        offloop.mark(run_in_thread)

    @staticmethod
    def deferred(active: ActiveRequest) -> Callable[[], None] | None:
        """The store work the request deferred on the loop so far, to run in a worker thread
        before the adapter's next message goes out (its errors are the operations'); ``None``
        when there is none. The request's end (``finish_request``) runs what is left first."""
        return offloop.take(active.deferred)

    def exists(self, app: str, session_id: str | None) -> bool:
        """Whether ``session_id`` names a live session of ``app``, here or in the store. Touches
        nothing: neither the access time nor the cache."""
        self._rt.check_open()
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
        session, presented_id = active.session, active.presented_id
        if session.created:
            return "set" if presented_id != session.id else None
        presented = ids.parse(presented_id)
        if presented is not None and self._rt.cache.other_app_holds(session.app, presented[0]):
            # The id still names another app's session here: deleting the cookie would end that
            # session for this browser. Keeping it gives this request nothing (no data adopted).
            return None
        return "delete" if presented_id else None

    def response_headers(
        self, active: ActiveRequest, *, https: bool, tracking: Tracking | None = None
    ) -> list[tuple[str, str]]:
        """The headers that carry the id back (``Set-Cookie``, and the id header in header
        mode), per :meth:`cookie_action`; empty when the id did not change. ``tracking`` is the
        adapter's own (an ASGI middleware given Starlette's cookie options), else the manager's.
        Adds ``Vary: Cookie`` when the request accessed its session or the cookie changes: the
        response then depends on the cookie, and a shared cache must not serve it to another."""
        action = self.cookie_action(active)
        accessed = active.accessed if active.ended else active.session.accessed_in(active.rid)
        vary = [("Vary", "Cookie")] if action or accessed else []  # accessed(), inline
        if action is None:
            return vary
        session_id = active.session.id if action == "set" else None
        tracking = tracking or self._rt.settings.tracking
        assert tracking is not None  # Settings gave the default
        return tracking.response_headers(session_id, https=https) + vary

    @staticmethod
    def accessed(active: ActiveRequest) -> bool:
        """Whether the request read, iterated or changed its session, so far (before it ends:
        WSGI sends its headers first) or in all (after)."""
        return active.accessed if active.ended else active.session.accessed_in(active.rid)

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
