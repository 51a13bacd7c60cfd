"""Counters a manager keeps. Counting one is lock-free and exact (see :class:`Stats`); adding more,
and reading, take a lock; reading returns a plain dict."""

from __future__ import annotations

import dataclasses
import itertools
import sys
import threading
from dataclasses import dataclass

from . import forks


@dataclass
class Counters:
    created: int = 0
    invalidated: int = 0
    timed_out: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    failovers: int = 0  # sessions served after loading them from the store
    affinity_breaks: int = 0  # ids naming another node
    writes_immediate: int = 0  # sessions written inside a request or attribute call
    writes_flushed: int = 0  # sessions written by the flusher, flush() or close()
    writes_saved: int = 0  # changed requests whose write was coalesced into a later one
    writes_deferred: int = 0  # inline writes left to the flusher while the store was failing
    touches: int = 0
    touch_failures: int = 0  # access times not written (the sessions stay due for a touch)
    conflicts_merged: int = 0
    conflict_overwrites: int = 0  # same key changed on two nodes: the later write won
    write_failures: int = 0  # writes that failed and were kept dirty for a retry
    write_refusals: int = 0  # of write_failures: one session's, refused by a store that is up
    unserializable_values: int = 0  # values mutated in place into unserializable ones: not written
    gone_on_write: int = 0  # written after another node invalidated it: dropped
    recreated: int = 0  # missing from the store (its data lost), written again from the cache
    evictions: int = 0
    refusals: int = 0  # new sessions refused by a full cache with overflow=False
    owner_mismatches: int = 0
    invalid_ids: int = 0
    corrupt_sessions: int = 0
    unavailable: int = 0  # requests answered 503 because the store was down
    access_timeouts: int = 0
    sweeps: int = 0
    reverted_requests: int = 0  # failed requests whose changes were rolled back
    refused_writes: int = 0  # changed requests answered 503, rolled back: write not durable
    feed_dropped: int = 0  # cached copies dropped because the invalidation feed named them
    feed_gaps: int = 0  # feed reads after a pause longer than the store keeps entries
    feed_catch_ups: int = (
        0  # cache hits that found the feed stale (read first, if the store allowed)
    )
    unverified_hits: int = 0  # cache hits served on a stale feed the store could not refresh
    not_recreated: int = (
        0  # missing from the store but not confirmed lately: dropped, not rewritten
    )


#: CPython runs ``next()`` of an ``itertools.count`` as one step under the GIL, so concurrent
#: increments are never lost. Without a GIL (free-threaded builds) every add takes the lock.
_GIL = getattr(sys, "_is_gil_enabled", lambda: True)()
_NAMES = tuple(f.name for f in dataclasses.fields(Counters))


class Stats:
    """Counts that stay exact under threads. An increment by one (every count a request makes) is
    ``next()`` of a per-counter ``itertools.count``, without the lock; an add of more goes to
    ``c`` under the lock. A snapshot reads each count by taking one more ``next()`` and subtracting
    the ones earlier snapshots took."""

    def __init__(self) -> None:
        self._start()
        # A forked child counts what it does itself, from zero, under a lock of its own.
        forks.at_fork_in_child(self, Stats._start)

    def _start(self) -> None:
        self.c = Counters()  # adds of more than one (every add, without a GIL)
        self._lock = threading.Lock()
        self._ones = {name: itertools.count() for name in _NAMES} if _GIL else None
        self._reads = dict.fromkeys(_NAMES, 0)  # next() calls taken by snapshots, per counter

    def add(self, name: str, n: int = 1) -> None:
        ones = self._ones
        if n == 1 and ones is not None:
            next(ones[name])
            return
        with self._lock:
            setattr(self.c, name, getattr(self.c, name) + n)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            out = dataclasses.asdict(self.c)
            if self._ones is not None:
                reads = self._reads
                for name, counter in self._ones.items():
                    out[name] += next(counter) - reads[name]
                    reads[name] += 1
            return out
