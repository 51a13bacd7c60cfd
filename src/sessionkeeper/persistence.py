"""When a node's cached sessions reach the store: immediate writes, the periodic flush, writes
before eviction, and the sweep of expired sessions.

The policy and the shared :class:`~sessionkeeper.policies.WriteRules` say *whether* a session is
due; the :class:`~sessionkeeper.writer.Writer` says *how* a
batch is written; this module picks *which* sessions, from the cache, at each of these moments.
Every method is safe to call from any thread (the housekeeping thread and requests call them at
once); a session is never written by two threads at a time (its write lock, in the writer).
"""

from __future__ import annotations

import contextlib
import threading

from . import forks, ids
from .cache import SessionCache
from .clock import Clock
from .events import DestroyReason, EventBus, SessionEvent, call_hook
from .policies import WriteRules
from .session import Session
from .stats import Stats
from .stores import Store
from .writer import Writer


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
        self._batch_lock = threading.Lock()
        forks.at_fork_in_child(self, Persistence._reset_in_child)

    def _reset_in_child(self) -> None:
        self._batch_lock = threading.Lock()  # a thread of the parent may have held it

    def write(self, sessions: list[Session], *, immediate: bool, raise_errors: bool = False) -> int:
        """Write ``sessions`` now in one batch; returns how many were written. Failures keep the
        sessions dirty (and raise only with ``raise_errors``)."""
        if not sessions:
            return 0
        # The writer records when it wrote on the monotonic clock: TimeBased measures from it.
        mono = self._clock.monotonic()
        # The writer takes each session's write lock in list order and holds them all: two
        # batches of several sessions at once (the flusher's, a group commit's) could each
        # hold a session the other waits for. One at a time; a single session's write holds
        # one lock and needs no turn.
        turn = self._batch_lock if len(sessions) > 1 else contextlib.nullcontext()
        with turn:
            written, gone = self._writer.write(sessions, mono, raise_errors=raise_errors)
        self.stats_counters.add("writes_immediate" if immediate else "writes_flushed", len(written))
        for s in gone:  # invalidated on another node meanwhile: its changes must not return
            self._cache.remove((s.app, s.token), s)
            s.reset_as_new(ids.new_token(), self._clock.time())
        return len(written)

    def dirty(self) -> list[Session]:
        return [s for s in self._cache if s.unwritten]

    def flush(self) -> int:
        written = self.write(self.dirty(), immediate=False)
        self._writer.touch([s for s in self._cache if self.rules.touch_at_flush(s)])
        return written

    def flush_due(self) -> int:
        now, mono = self._clock.time(), self._clock.monotonic()
        written = self.write(
            [s for s in self.dirty() if self.rules.due_for_flush(s, mono)], immediate=False
        )
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
