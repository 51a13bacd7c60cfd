"""``SessionManager``: the request lifecycle, the local cache, the write policy and housekeeping.

A request, end to end (DESIGN.md): the adapter calls :meth:`SessionManager.begin_request` with the
presented id; the cached copy is trusted only when the id's node suffix names this node, otherwise
the session is loaded from the store (failover). The application reads and writes the session; on
:meth:`SessionManager.end_request` the policy decides whether to write now or leave it dirty for the
flusher. A request that never writes to its session creates nothing.

Thread safety: every public method may be called from any thread. One manager serves one process;
after a fork each process gets its own housekeeping thread and store connections.
"""

from __future__ import annotations

import atexit
import inspect
import itertools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from . import ids
from .cache import SessionCache
from .clock import Clock, SystemClock
from .errors import (
    AccessTimeout,
    CacheFull,
    ConfigurationError,
    CorruptSessionData,
    SerializationError,
    StoreError,
    StoreUnavailable,
)
from .events import (
    _PLAIN_TYPES,
    AttributeEvent,
    DestroyReason,
    EventBus,
    SessionEvent,
    SessionListener,
    call_hook,
)
from .housekeeping import Housekeeper, within_hours
from .persistence import Persistence
from .policies import EndOfRequest, WritePolicy, parse_policy
from .serialization import JsonSerializer, Serializer, json_cannot_fail, make_serializer
from .session import _MISSING, Session, current_request
from .stats import Stats
from .stores import Store, StoredSession, open_store
from .tracking import Tracking
from .writer import Contents, Writer

log = logging.getLogger("sessionkeeper")

_request_ids = itertools.count(1)

#: The body of the 503 answered when a request's session cannot be had (see ``refuse``).
UNAVAILABLE_BODY = b"Session store unavailable, please retry.\n"
_live_managers: weakref.WeakSet[SessionManager] = weakref.WeakSet()


@dataclass(eq=False, slots=True)
class ActiveRequest:
    """One request's hold on its session, from ``begin_request`` to ``end_request``."""

    session: Session
    rid: int
    updates_at_start: int
    locked: bool = False
    ended: bool = False


class SessionManager:
    """Server-side sessions for one process. See the README for every option."""

    def __init__(
        self,
        store: str | Store = "sqlite:///sessions.db",
        *,
        write: WritePolicy | str | None = None,
        contents: Contents = "updated",
        timeout_s: float = 1800.0,
        app_timeouts_s: Mapping[str, float] | None = None,
        node: str | None = None,
        serialize_access: bool = False,
        access_wait_s: float = 10.0,
        cache_size: int = 1000,
        overflow: bool = True,
        save_on_create: bool = True,
        save_period_s: float = 60.0,
        flush_poll_s: float = 1.0,
        sweep_interval_s: float = 300.0,
        sweep_hours: tuple[int, int] | None = None,
        sweep_grace_s: float = 0.0,
        sweep_batch: int = 1000,
        serializer: str | Serializer = "json",
        pickle_key: bytes | str | None = None,
        tracking: Tracking | None = None,
        retry_after_s: int = 5,
        outage_backoff_s: float = 1.0,
        shutdown_deadline_s: float = 10.0,
        clock: Clock | None = None,
        store_options: Mapping[str, Any] | None = None,
        housekeeping: bool = True,
    ) -> None:
        if contents not in ("updated", "accessed", "all"):
            raise ConfigurationError("contents must be 'updated', 'accessed' or 'all'")
        if timeout_s <= 0:
            raise ConfigurationError("timeout_s must be positive")
        for name, value in (
            ("save_period_s", save_period_s),
            ("flush_poll_s", flush_poll_s),
            ("sweep_interval_s", sweep_interval_s),
        ):
            if value <= 0:
                raise ConfigurationError(f"{name} must be positive")
        if outage_backoff_s < 0:
            raise ConfigurationError("outage_backoff_s must not be negative")
        if sweep_hours is not None and not all(0 <= h <= 23 for h in sweep_hours):
            raise ConfigurationError("sweep_hours are two hours of the day, 0 to 23")
        self.store = open_store(store, **dict(store_options or {}))
        self.policy = parse_policy(write) if write is not None else EndOfRequest()
        self.contents: Contents = contents
        self.timeout_s = float(timeout_s)
        self.app_timeouts_s = dict(app_timeouts_s or {})
        self._node = ids.check_node_name(node) if node else None
        self._node_pid = -1
        self._node_default = ""
        self.serialize_access = serialize_access
        self.access_wait_s = access_wait_s
        self.overflow = overflow
        self.save_on_create = save_on_create
        self.save_period_s = save_period_s
        self.sweep_interval_s = sweep_interval_s
        self.sweep_hours = sweep_hours
        self.sweep_batch = sweep_batch
        self.serializer = make_serializer(serializer, pickle_key=pickle_key)
        self._json = type(self.serializer) is JsonSerializer  # plain scalars need no check
        self.tracking = tracking or Tracking()
        self.retry_after_s = retry_after_s
        self.outage_backoff_s = outage_backoff_s
        self.shutdown_deadline_s = shutdown_deadline_s
        self.clock: Clock = clock or SystemClock()
        # A node deletes a store row only after the longest time another node may hold back a
        # write of it: the policy's delay, the access-time period, and one flusher poll each.
        self.sweep_grace_s = max(sweep_grace_s, self.policy.max_delay_s, save_period_s) + (
            2 * flush_poll_s
        )
        self.stats_counters = Stats()
        self.events = EventBus()
        self._cache = SessionCache(cache_size)
        self._writer = Writer(
            self.store, self.serializer, self.stats_counters, contents, lambda: self.node
        )
        self._persistence = Persistence(
            store=self.store,
            cache=self._cache,
            writer=self._writer,
            policy=self.policy,
            stats=self.stats_counters,
            events=self.events,
            clock_time=self.clock.time,
            save_on_create=save_on_create,
            save_period_s=save_period_s,
        )
        self._housekeeper = Housekeeper(self.housekeep, flush_poll_s, "housekeeping")
        self._housekeeping = housekeeping
        self._next_sweep_at = self.clock.time() + sweep_interval_s
        self._warned_affinity = False
        self._closed = False
        self._close_lock = threading.Lock()
        _live_managers.add(self)

    # -- identity -----------------------------------------------------------------------------

    @property
    def node(self) -> str:
        """This process's node name: the one given, or host and pid (computed per process)."""
        if self._node is not None:
            return self._node
        pid = os.getpid()
        if pid != self._node_pid:
            self._node_default, self._node_pid = ids.default_node_name(), pid
        return self._node_default

    def timeout_for(self, app: str) -> float:
        return self.app_timeouts_s.get(app) or self.timeout_s

    def add_listener(self, listener: SessionListener) -> None:
        self.events.add(listener)

    # -- the request lifecycle ----------------------------------------------------------------

    @contextmanager
    def request(
        self, app: str = "default", session_id: str | None = None, *, owner: str | None = None
    ) -> Iterator[Session]:
        """The session for one request. Changes are written per the policy when the block exits
        normally; an exception rolls back the request's changes and writes nothing."""
        active = self.begin_request(app, session_id, owner=owner)
        ok = False
        try:
            yield active.session
            ok = True
        finally:
            self.end_request(active, ok=ok)

    def begin_request(
        self, app: str = "default", session_id: str | None = None, *, owner: str | None = None
    ) -> ActiveRequest:
        """Resolve the session (loading it from the store when needed) and hold it.

        Raises :class:`StoreUnavailable` when the session is not cached and the store is down
        (adapters answer 503), :class:`AccessTimeout` with ``serialize_access``."""
        self._ensure_started()
        session = self._resolve(app, session_id, owner, allow_io=True)
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
        self._ensure_started()
        session = self._resolve(app, session_id, owner, allow_io=False)
        if session is None:
            return None
        return self.enter(session, wait=False)

    def enter(self, session: Session, *, wait: bool) -> ActiveRequest | None:
        locked = False
        if self.serialize_access:
            if wait:
                locked = session.access_lock.acquire(timeout=self.access_wait_s)
                if not locked:
                    self.stats_counters.add("access_timeouts")
                    raise AccessTimeout(
                        f"session busy for more than access_wait_s={self.access_wait_s:g}"
                    )
            elif not session.access_lock.acquire(blocking=False):
                return None
            else:
                locked = True
        rid = next(_request_ids)
        current_request.set(rid)
        now = self.clock.time()
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
        write = False
        try:
            if ok:
                s.end_undo(active.rid, revert=False)
                if s.created:
                    now = self.clock.time()
                    if (not s.in_store and self.save_on_create) or self.policy.at_request_end(
                        s, now
                    ):
                        write = True
                    elif s.updates_since_write > active.updates_at_start:
                        self.stats_counters.add("writes_saved")
            else:
                if s.end_undo(active.rid, revert=True):
                    self.stats_counters.add("reverted_requests")
                if s.is_new and s.created and not s.in_store:
                    self._cache.remove((s.app, s.token), s)  # never existed for anyone else
                    s.created = False
                    s.replace_data({})
                elif not self.policy.deferred and s.has_changes():
                    write = True  # restore what an immediate write already stored
        finally:
            with s.lock:
                s.active_requests -= 1
                s.is_new = False
            if active.locked:
                s.access_lock.release()
            if current_request.get() == active.rid:
                current_request.set(None)
        if write and self._store_failing():
            write = False
        if not write and self._cache.over_capacity() <= 0:
            return None

        def pending() -> None:
            if write:
                self._write([s], immediate=True)
            self._evict_over_capacity()

        return pending

    def bind(self, active: ActiveRequest) -> None:
        """Make the calling thread or task the one serving ``active``, so that its changes are
        undone when the request fails. Async adapters call it on the event loop after
        ``begin_request`` ran in a worker thread (a context variable does not flow back)."""
        if not active.ended:
            current_request.set(active.rid)

    def exists(self, app: str, session_id: str | None) -> bool:
        """Whether ``session_id`` names a live session of ``app``, here or in the store. Touches
        nothing: neither the access time nor the cache."""
        parsed = ids.parse(session_id)
        if parsed is None:
            return False
        now = self.clock.time()
        cached = self._cache.get((app, parsed[0]))
        if cached is not None and cached.created and not cached.expired(now):
            return True
        stored = self.store.load(app, parsed[0])
        return stored is not None and now - stored.last_access_at <= stored.timeout_s

    def cookie_action(self, session: Session) -> str | None:
        """What the response must do with the id: ``"set"`` (new or changed id), ``"delete"``
        (the presented session no longer exists and none was created), or ``None``."""
        if session.created:
            return "set" if session.presented_id != session.id else None
        presented = ids.parse(session.presented_id)
        if presented is not None and self._cache.other_app_holds(session.app, presented[0]):
            return None  # the id still names another app's session
        return "delete" if session.presented_id else None

    def refuse(self) -> list[tuple[str, str]]:
        """Count a request whose session could not be had (one of ``UNAVAILABLE_ERRORS``) and
        return the headers of its ``503 Service Unavailable``; the body is
        :data:`UNAVAILABLE_BODY`. Never a 500, never a silently empty session."""
        self.stats_counters.add("unavailable")
        return [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(UNAVAILABLE_BODY))),
            ("Retry-After", str(self.retry_after_s)),
        ]

    def response_headers(self, session: Session, *, https: bool) -> list[tuple[str, str]]:
        """The headers that carry the id back (``Set-Cookie``, and the id header in header
        mode), per :meth:`cookie_action`; empty when the id did not change."""
        action = self.cookie_action(session)
        if action is None:
            return []
        return self.tracking.response_headers(session.id if action == "set" else None, https=https)

    # -- resolving a session ------------------------------------------------------------------

    def _resolve(
        self, app: str, session_id: str | None, owner: str | None, *, allow_io: bool
    ) -> Session | None:
        parsed = ids.parse(session_id)
        if session_id and parsed is None:
            self.stats_counters.add("invalid_ids")
        now = self.clock.time()
        if parsed is not None:
            token, node = parsed
            key = (app, token)
            cached = self._cache.get(key)
            if node == self.node and cached is not None and not cached.expired(now):
                if owner is None or self._owner_ok(owner, cached.owner):
                    self.stats_counters.add("cache_hits")
                    cached.presented_id = session_id
                    return cached
            elif not allow_io:
                return None
            elif cached is None or node != self.node:
                self.stats_counters.add("cache_misses")
                if node != self.node:
                    self._affinity_break()
                found = self._load(app, token, cached, now)
                if found is not None and self._owner_ok(owner, found.owner):
                    self.stats_counters.add("failovers")
                    found.presented_id = session_id
                    return found
            if cached is not None and cached.expired(now) and not cached.in_use:
                self._cache.remove(key, cached)
        # A browser carries one id for every app: a new session of this app takes the id its
        # other apps' sessions use here, so that their shared cookie keeps working for all.
        shared = parsed is not None and self._cache.other_app_holds(app, parsed[0])
        s = Session(
            self,
            app,
            parsed[0] if parsed is not None and shared else ids.new_token(),
            created_at=now,
            timeout_s=self.timeout_for(app),
            owner=owner,
            track_reads=self.contents == "accessed",
        )
        s.presented_id = session_id
        return s

    def _owner_ok(self, presented: str | None, bound: str | None) -> bool:
        if presented is None or bound is None or presented == bound:
            return True
        self.stats_counters.add("owner_mismatches")
        return False

    def _affinity_break(self) -> None:
        self.stats_counters.add("affinity_breaks")
        if self.policy.deferred and not self._warned_affinity:
            self._warned_affinity = True
            log.warning(
                "a session moved between nodes under the deferred policy %s: the previous "
                "node's unwritten changes are not in the store yet. Route sessions back to "
                "their node (sticky load balancing) or use EndOfRequest.",
                self.policy.spec(),
            )

    def _load(self, app: str, token: str, cached: Session | None, now: float) -> Session | None:
        if cached is not None and cached.has_changes():
            self._write([cached], immediate=True)  # ours first, so the load merges it
        try:
            stored = self.store.load(app, token)  # a store may find the row itself unreadable
            if stored is None or now - stored.last_access_at > stored.timeout_s:
                if cached is not None:
                    self._cache.remove((app, token), cached)
                return None
            data = {k: self.serializer.loads(v) for k, v in stored.attributes.items()}
        except CorruptSessionData as exc:
            self.stats_counters.add("corrupt_sessions")
            log.error(
                "session %s of app %r has unreadable data (%s): replaced by a new session",
                token[:8],
                app,
                exc,
            )
            return None
        except StoreError as exc:
            if not isinstance(exc, StoreUnavailable):  # the store logs its own outages
                log.error("session %s of app %r could not be read: %s", token[:8], app, exc)
            raise
        if cached is not None:
            self._refresh(cached, stored, data)
            return cached
        s = Session(
            self,
            app,
            token,
            created_at=stored.created_at,
            timeout_s=stored.timeout_s,
            last_access_at=stored.last_access_at,
            version=stored.version,
            owner=stored.owner,
            data=data,
            track_reads=self.contents == "accessed",
        )
        s.is_new = False
        self._remember_stored(s, stored)
        shared = self._cache.add((app, token), s)
        if shared is s:
            for value in data.values():
                call_hook(value, "session_did_activate", s)
            self._evict_over_capacity()
        return shared

    def _refresh(self, s: Session, stored: StoredSession, data: dict[str, Any]) -> None:
        with s.lock:
            s.replace_data(data)
            s.version = stored.version
            s.last_access_at = max(s.last_access_at, stored.last_access_at)
            s.timeout_s = stored.timeout_s
            s.set_keys, s.deleted_keys, s.read_keys = set(), set(), set()
            self._remember_stored(s, stored)

    def _remember_stored(self, s: Session, stored: StoredSession) -> None:
        s.last_store_access_at = stored.last_access_at
        s.in_store = s.created = True
        if self.contents == "accessed":
            s.stored_hashes = {k: hash(v) for k, v in stored.attributes.items()}

    # -- SessionHost: called by Session ------------------------------------------------------

    def _validate_value(self, session: Session, key: str, value: Any) -> None:
        limit = self.store.max_value_bytes  # known once the store has connected
        if not (self._json and json_cannot_fail(value, limit)):
            try:
                size = len(self.serializer.dumps(value))
            except (TypeError, ValueError, RecursionError) as exc:
                raise SerializationError(key, value, str(exc)) from exc
            if limit is not None and size > limit:
                raise SerializationError(key, value, f"{size} bytes, over the store's {limit}")
        if not session.created:
            self._create(session)

    def _metadata_changed(self, session: Session) -> None:
        if not session.created:
            self._create(session)
        session.meta_changed = True

    def _create(self, s: Session) -> None:
        if not self.overflow and self._cache.over_capacity() >= 0:
            self._evict_over_capacity(room=1)  # idle sessions make room before a refusal
        if not self.overflow and self._cache.over_capacity() >= 0:
            self.stats_counters.add("refusals")
            raise CacheFull(
                f"the session cache is full ({self._cache.capacity} sessions) and overflow=False"
            )
        with s.lock:
            s.created = True
            s.is_new = True
        self._cache.add((s.app, s.token), s)
        self.stats_counters.add("created")
        if self.events:
            self.events.emit("session_created", SessionEvent(s.app, s.token, s))

    def _attribute_changed(self, session: Session, key: str, old: Any, new: Any) -> None:
        # call_hook returns at once for plain types; checked here first, it is not even called.
        if old is not new:
            if old is not _MISSING and type(old) not in _PLAIN_TYPES:
                call_hook(old, "value_unbound", session, key)
            if new is not _MISSING and type(new) not in _PLAIN_TYPES:
                call_hook(new, "value_bound", session, key)
        if self.events:
            if new is _MISSING:
                self.events.emit("attribute_removed", AttributeEvent(session, key, old))
            elif old is _MISSING:
                self.events.emit("attribute_added", AttributeEvent(session, key, new))
            else:
                self.events.emit("attribute_replaced", AttributeEvent(session, key, new, old))
        if self.policy.at_attribute_change(session) and not self._store_failing():
            self._write([session], immediate=True)

    def sync_session(self, session: Session) -> None:
        if not session.created:
            self._create(session)
        self._write([session], immediate=True, raise_errors=True)

    def invalidate_session(self, s: Session) -> None:
        now = self.clock.time()
        with s.write_lock:
            if s.in_store:
                self._retire(s.app, s.token, s.timeout_s)
            self._cache.remove((s.app, s.token), s)
        was_created = s.created
        old_token = s.token
        values = s.reset_as_new(ids.new_token(), now)
        if not was_created:
            return
        self.stats_counters.add("invalidated")
        for key, value in values.items():
            call_hook(value, "value_unbound", s, key)
        if self.events:
            self.events.emit(
                "session_destroyed", SessionEvent(s.app, old_token, s, DestroyReason.INVALIDATED)
            )

    def rotate_session_id(self, s: Session) -> None:
        if not s.created:
            self._create(s)
        old, new = s.token, ids.new_token()
        if s.in_store:
            # Store the whole session under the new token first; only then retire the old one.
            with s.lock:
                old_version = s.version
                s.token, s.version, s.in_store = new, 0, False
            try:
                self._write([s], immediate=True, raise_errors=True)
                if not s.in_store:
                    raise StoreError("the session could not be stored under its new id")
            except BaseException:
                with s.lock:
                    s.token, s.version, s.in_store = old, old_version, True
                raise
            self._retire(s.app, old, s.timeout_s)
        else:
            s.token = new
        self._cache.remove((s.app, old), s)
        self._cache.add((s.app, new), s)

    def _retire(self, app: str, token: str, timeout_s: float) -> None:
        """Delete a session from the store, leaving a tombstone for as long as a copy on another
        node may still try to write it: its timeout plus the sweep's grace."""
        self.store.delete(
            app, token, tombstone_until=self.clock.time() + timeout_s + self.sweep_grace_s
        )

    def _store_failing(self) -> bool:
        """During an outage, requests stop writing inline for ``outage_backoff_s`` after each
        failure, so cached sessions are served at full speed; their changes stay dirty and the
        flusher (which keeps trying every poll) writes them when the store answers."""
        if self.store.failing(self.outage_backoff_s):
            self.stats_counters.add("writes_deferred")
            return True
        return False

    # -- writing, flushing, eviction (see persistence.py) ----------------------------------

    def _write(
        self, sessions: list[Session], *, immediate: bool, raise_errors: bool = False
    ) -> int:
        return self._persistence.write(sessions, immediate=immediate, raise_errors=raise_errors)

    def _evict_over_capacity(self, room: int = 0) -> None:
        self._persistence.evict_over_capacity(room)

    def flush(self) -> int:
        """Write every dirty session now, in one batch, and the access time of every session
        whose store copy is behind. Returns how many sessions were written."""
        return self._persistence.flush()

    def flush_due(self) -> int:
        """What the housekeeping thread does each poll: write the sessions the policy says are
        due, and the access time of those whose store copy is older than ``save_period_s``."""
        return self._persistence.flush_due()

    # -- housekeeping --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the housekeeping thread in this process now (an ASGI lifespan startup); the
        first request of a process starts it anyway."""
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._housekeeping and not self._closed:
            self._housekeeper.ensure_started()

    def housekeep(self) -> None:
        """One tick of the housekeeping thread: flush what is due, sweep when it is time.
        Tests with a fake clock call it directly."""
        try:
            self.flush_due()
        except (StoreError, CorruptSessionData) as exc:
            log.warning("flush failed, dirty sessions kept: %s", exc)
        now = self.clock.time()
        if now >= self._next_sweep_at:
            self._next_sweep_at = now + self.sweep_interval_s
            if within_hours(self.sweep_hours, now):
                try:
                    self.sweep()
                except (StoreError, CorruptSessionData) as exc:
                    log.warning("sweep failed: %s", exc)

    def sweep(self) -> int:
        """End expired sessions: drop them from this cache, and delete from the store those that
        expired more than ``sweep_grace_s`` ago, firing their destroyed events (exactly one node
        gets each). Returns how many store sessions were deleted."""
        return self._persistence.sweep(self.sweep_grace_s, self.sweep_batch)

    # -- observation and shutdown ------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters of this manager and of its store (``store_*``), plus gauges."""
        out: dict[str, Any] = dict(self.stats_counters.snapshot())
        sessions = self._cache.snapshot()
        out["live"] = len(sessions)
        out["dirty"] = sum(1 for s in sessions if s.created and s.has_changes())
        out["node"] = self.node
        out["policy"] = self.policy.spec()
        for key, value in self.store.stats.as_dict().items():
            out[f"store_{key}"] = value
        return out

    def close(self, deadline_s: float | None = None) -> list[str]:
        """Stop housekeeping, write every dirty session (retrying until ``deadline_s``, default
        ``shutdown_deadline_s``), and close the store. Returns the ids that could not be
        written, which are also logged. Idempotent."""
        with self._close_lock:
            if self._closed:
                return []
            self._closed = True
        self._housekeeper.stop()
        # Real time, not self.clock: this bounds how long a process really waits to exit.
        deadline = time.monotonic() + (
            self.shutdown_deadline_s if deadline_s is None else deadline_s
        )
        wait = threading.Event()
        while True:
            try:
                self.flush()
            except (StoreError, CorruptSessionData) as exc:
                log.warning("flush at shutdown failed: %s", exc)
            left = self._persistence.dirty()
            if not left or time.monotonic() >= deadline:
                break
            wait.wait(0.2)
        unwritten = [f"{s.app}:{s.token}" for s in left]
        if unwritten:
            log.error(
                "shutdown: %d sessions could not be written: %s",
                len(unwritten),
                ", ".join(unwritten),
            )
        self.store.close()
        return unwritten

    def __enter__(self) -> SessionManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The keyword arguments of :class:`SessionManager`, as adapters read them from settings.
MANAGER_OPTIONS = frozenset(inspect.signature(SessionManager.__init__).parameters) - {"self"}


def manager_options(
    settings: Mapping[str, Any], *, prefix: str = "", source: str
) -> tuple[str | None, dict[str, Any]]:
    """Split framework settings into ``(app_name, SessionManager keywords)``.

    Names after ``prefix`` match in any case (keys without the prefix are not ours); ``APP_NAME``
    is the app name, every other key must be a :class:`SessionManager` keyword, else
    :class:`ConfigurationError` names it (``source`` says where the settings come from)."""
    app_name: str | None = None
    options: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in settings.items():
        key = str(key)
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :].lower()
        if name == "app_name":
            app_name = str(value)
        elif name in MANAGER_OPTIONS:
            options[name] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConfigurationError(
            f"{source}: {', '.join(sorted(unknown))} not a SessionManager option "
            f"(known: {', '.join(sorted(MANAGER_OPTIONS))})"
        )
    return app_name, options


def close_all() -> None:
    """Close every manager of this process: for gunicorn's ``worker_exit`` hook and atexit."""
    for manager in list(_live_managers):
        try:
            manager.close()
        except Exception:
            log.exception("closing a session manager failed")


atexit.register(close_all)
