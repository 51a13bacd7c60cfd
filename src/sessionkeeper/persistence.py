"""When a node's cached sessions reach the store: immediate writes, the periodic flush, writes
before eviction, and the sweep of expired sessions.

The policy and the shared :class:`~sessionkeeper.policies.WriteRules` say *whether* a session is
due; the :class:`~sessionkeeper.writer.Writer` says *how* a
batch is written; this module picks *which* sessions, from the cache, at each of these moments.
Every method is safe to call from any thread (the housekeeping thread and requests call them at
once); a session is never written by two threads at a time (its write lock, in the writer).
"""

from __future__ import annotations

import logging

from . import ids
from .cache import SessionCache
from .clock import Clock
from .errors import ManagerClosed
from .events import DestroyReason, EventBus, SessionEvent, call_hook
from .logs import fields, session_hash
from .policies import WriteRules
from .session import Session
from .stats import Stats
from .stores import Store
from .writer import Writer

log = logging.getLogger("sessionkeeper")


class Persistence:
    def __init__(
        self,
        *,
        store: Store,
        cache: SessionCache,
        writer: Writer,
        rules: WriteRules,
        stats: Stats,
        events: EventBus,
        clock: Clock,
    ) -> None:
        self.store = store
        self._cache = cache
        self._writer = writer
        self.rules = rules
        self.stats_counters = stats
        self.events = events
        self._clock = clock
        #: Set by ``SessionManager.close`` just before it closes the store: from then on nothing
        #: is written, touched or swept; a change made later stays in memory, dirty, and logged.
        self.store_closed = False

    def write(self, sessions: list[Session], *, immediate: bool, raise_errors: bool = False) -> int:
        """Write ``sessions`` now in one batch; returns how many were written. Failures keep the
        sessions dirty (and raise only with ``raise_errors``)."""
        return len(self._write(sessions, immediate=immediate, raise_errors=raise_errors)[0])

    def write_sessions(self, sessions: list[Session], *, immediate: bool) -> list[Session]:
        """As :meth:`write`, returning the sessions whose changes, as they were when the writer
        took them, are all in the store afterwards: those written, and those another write had
        already carried (nothing left to take). A group commit answers each request by it."""
        written, current = self._write(sessions, immediate=immediate, raise_errors=False)
        return written + current

    def _write(
        self, sessions: list[Session], *, immediate: bool, raise_errors: bool
    ) -> tuple[list[Session], list[Session]]:
        if not sessions:
            return [], []
        if self.store_closed:
            for s in sessions:
                log.error(
                    "session %s of app %r changed after its manager was closed: not written",
                    session_hash(s.app, s.token),
                    s.app,
                    extra=fields(s.app, s.token),
                )
            if raise_errors:
                raise ManagerClosed("the session manager was closed; nothing is written")
            return [], []
        # The writer records when it wrote on the monotonic clock: TimeBased measures from it.
        mono = self._clock.monotonic()
        # Batches of several sessions at once (the flusher's, a group commit's) cannot deadlock:
        # the writer takes their write locks in one order, (app, token).
        written, gone, current = self._writer.write(sessions, mono, raise_errors=raise_errors)
        self.stats_counters.add("writes_immediate" if immediate else "writes_flushed", len(written))
        for s in gone:  # invalidated on another node meanwhile: its changes must not return
            self._cache.remove((s.app, s.token), s)
            s.reset_as_new(ids.new_token(), self._clock.time())
        return written, current

    def dirty(self) -> list[Session]:
        return [s for s in self._cache if s.unwritten]

    def flush(self) -> int:
        written = self.write(self.dirty(), immediate=False)
        if self.store_closed:
            return written
        self._writer.touch([s for s in self._cache if self.rules.touch_at_flush(s)])
        return written

    def flush_due(self) -> int:
        now, mono = self._clock.time(), self._clock.monotonic()
        written = self.write(
            [s for s in self.dirty() if self.rules.due_for_flush(s, mono)], immediate=False
        )
        if self.store_closed:
            return written
        self._writer.touch([s for s in self._cache if self.rules.touch_due(s, now)])
        return written

    def evict_over_capacity(self, room: int = 0) -> None:
        """Evict least recently used idle sessions until ``room`` more fit; each dirty one is
        written first, and kept if that fails."""
        excess = self._cache.over_capacity() + room
        if excess <= 0:
            return
        for s in self._cache.eviction_candidates(excess):
            if self.rules.write_before_eviction(s):
                self.write([s], immediate=False)
                if s.unwritten:
                    continue  # could not be written: keep it rather than lose it
            with s.lock:
                values = list(s.data_view().values())
            for value in values:
                call_hook(value, "session_will_passivate", s)
            if self._cache.remove((s.app, s.token), s):
                self.stats_counters.add("evictions")

    def sweep(self, grace_s: float, batch_size: int) -> int:
        if self.store_closed:
            return 0
        now = self._clock.time()
        for s in self._cache:
            if not s.in_use and s.expired(now):
                self._cache.remove((s.app, s.token), s)
        deleted = 0
        while True:
            batch = self.store.delete_expired(now - grace_s, batch_size)
            for e in batch:
                cached = self._cache.get((e.app, e.token))
                if cached is not None:
                    self._cache.remove((e.app, e.token), cached)
                    for key, value in list(cached.data_view().items()):
                        call_hook(value, "value_unbound", cached, key)
                if self.events:
                    self.events.emit(
                        "session_destroyed",
                        SessionEvent(e.app, e.token, cached, DestroyReason.TIMED_OUT),
                    )
            deleted += len(batch)
            if len(batch) < batch_size:
                break
        self.stats_counters.add("timed_out", deleted)
        self.stats_counters.add("sweeps")
        return deleted
