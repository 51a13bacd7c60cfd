"""``InvalidationFeed``: this node's reader of the store's feed of ended ids.

Every delete with tombstone, on any node (``invalidate()``, ``rotate_id()`` retiring the old id),
appends to the store's feed (``Store.invalidations_since``). Each node reads it: the housekeeping
thread every ``flush_poll_s`` (:meth:`poll`), and a request whose cache hit finds the last read
too old (:meth:`catch_up`). A cached copy the feed names is dropped: never written back, no
destroyed event (the invalidating node fired it). See docs/security.md.

The feed is *fresh* while its last successful read started less than ``stale_after_s`` ago
(``2 * flush_poll_s`` plus the store's ``timeout_s``); only then is a cached copy trusted on a
cache hit. One read runs at a time (a lock); ``fresh`` and ``confirmed_at`` may be called from
any thread. A node starts from the feed's current end, read before its first request resolves
a session, so nothing it caches was loaded before its cursor.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from . import ids
from .cache import SessionCache
from .clock import Clock
from .session import Session
from .stats import Stats
from .stores import Store

log = logging.getLogger("sessionkeeper.feed")

#: Entries per read; a read takes pages until one comes back short.
PAGE = 1000


class InvalidationFeed:
    def __init__(
        self,
        store: Store,
        cache: SessionCache,
        clock: Clock,
        stats: Stats,
        *,
        poll_s: float,
        retention_s: float,
        write: Callable[[list[Session]], object],
        backoff_s: float,
    ) -> None:
        self._store = store
        self._cache = cache
        self._clock = clock
        self._stats = stats
        #: How old the last read may be for a cached copy to be trusted.
        self.stale_after_s = 2 * poll_s + store.timeout_s
        #: How long the store keeps an entry at least (a tombstone's life: the shortest session
        #: timeout); a read after a longer pause may have missed entries (:meth:`_after_gap`).
        #: An entry may go sooner only with its session's deadline, past which every copy of it
        #: has expired anyway: absolute lifetimes need no shorter bound here.
        self.retention_s = retention_s
        self._write = write  # Persistence.write of some sessions, as the flusher does
        self._backoff_s = backoff_s  # outage_backoff_s: no request reads it again before
        self._failed_mono = float("-inf")  # when a read last failed
        #: How long a request waits for a feed read already running (the store's call bound).
        self._wait_s = store.timeout_s
        self._cursor: str | None = None
        self._read_mono: float | None = None  # when the last successful read started
        self._read_wall = float("-inf")  # the same moment on the wall clock
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._cursor is not None

    def fresh(self) -> bool:
        """Whether the last successful read started within ``stale_after_s``."""
        at = self._read_mono
        return at is not None and self._clock.monotonic() - at <= self.stale_after_s

    def confirmed_at(self, s: Session) -> float:
        """The latest wall time at which this node knew ``s`` was not ended: its last store
        contact, or the last feed read (which would have dropped it). A tombstone written after
        it lives until the session would have expired, by its timeout or its deadline, plus the
        grace (``Host._retire``)."""
        return max(s.last_write_at, s.last_store_access_at, self._read_wall)

    def may_recreate(self, s: Session, now: float) -> bool:
        """Whether a copy whose row is missing from the store may write it again (a row the
        store lost, not one it tombstoned): only one this node served within its timeout and
        knew to be live within its timeout, so that any tombstone of it would still be there
        to answer GONE. Anything older is dropped: its tombstone may be swept already."""
        return not s.expired(now) and now - self.confirmed_at(s) <= s.timeout_s

    def poll(self) -> int:
        """Read the feed from the cursor (or, the first time, take its end) and drop every
        cached copy it names; returns how many were dropped. Raises ``StoreError``."""
        with self._lock:
            try:
                return self._read()
            except Exception:
                # A request finding the feed stale then serves its copy at once (the outage
                # rule) instead of paying every retry again.
                self._failed_mono = self._clock.monotonic()
                raise

    def catch_up(self) -> bool:
        """From a request whose cache hit found the feed stale: read it now (waiting for a read
        already running). Whether the feed is fresh afterwards; ``False`` if the store failed,
        now or less than ``backoff_s`` ago (then it is not tried: the request does not pay
        every retry again). A read already running (the housekeeping's) is waited for at most
        the store's own timeout: a hung store never holds a request longer than that here."""
        if not self._lock.acquire(timeout=self._wait_s):
            return False
        try:
            if self.fresh():
                return True  # another thread read it while we waited
            if self._clock.monotonic() - self._failed_mono < self._backoff_s:
                return False
            try:
                self._read(probe=True)
            except Exception as exc:  # StoreError: the store logs its own outages
                self._failed_mono = self._clock.monotonic()
                log.debug("feed read failed: %s", exc)
                return False
            return True
        finally:
            self._lock.release()

    def _read(self, *, probe: bool = False) -> int:
        mono, wall = self._clock.monotonic(), self._clock.time()
        dropped = 0
        if self._cursor is None:
            _, self._cursor = self._store.invalidations_since(None, probe=probe)
        else:
            while True:
                entries, self._cursor = self._store.invalidations_since(
                    self._cursor, PAGE, probe=probe
                )
                dropped += sum(self._drop(e.app, e.token, wall) for e in entries)
                if len(entries) < PAGE:
                    break
            if wall - self._read_wall > self.retention_s:
                self._after_gap()  # before this read counts as confirming anything
        self._read_mono, self._read_wall = mono, wall
        if dropped:
            self._stats.add("feed_dropped", dropped)
        return dropped

    def _after_gap(self) -> None:
        """This node did not read the feed for longer than the store keeps its entries (cut
        off from the store), so the feed may have lost entries naming copies cached here. Each
        idle copy is checked against the store instead: a dirty one is written (a tombstone
        answers GONE; a missing row is re-created only under :meth:`may_recreate`, which the
        last read before the gap decides), a clean one is dropped, to be loaded again."""
        self._stats.add("feed_gaps")
        idle = [s for s in self._cache if not s.in_use]
        self._write([s for s in idle if s.unwritten])
        for s in idle:
            if not s.unwritten and s.last_write_at < self._clock.time():
                self._cache.remove((s.app, s.token), s)

    def _drop(self, app: str, token: str, now: float) -> bool:
        s = self._cache.get((app, token))
        if s is None:
            return False
        with s.write_lock:  # a write in flight ends first; the store answers it GONE
            if s.token != token or not self._cache.remove((app, token), s):
                return False  # rotated here meanwhile: the copy lives on under its new id
            # Requests still holding the object see a new, empty session, as after GONE.
            s.reset_as_new(ids.new_token(), now)
        return True
