"""The store contract.

A store only loads, saves, touches, deletes and lists sessions; it knows nothing of write policies or
of the manager. :class:`Store`'s public methods apply the rules every backend shares (retries with
backoff, turning driver errors into typed errors, the attribute-level merge after a version
conflict, counters) and call a small backend hook (``_load``, ``_save_batch``...), as Jetty's
``AbstractSessionDataStore.store()`` calls ``doStore()``.

Every public method is safe to call from several threads at once.

Backends must provide (the abstract section below):

* ``_load(app, token)``: the live session, or ``None`` when absent or tombstoned.
* ``_save_batch(requests)``: one result per request, in order. Each request is applied atomically and
  only if the stored version equals ``expected_version`` (``0``: the session must not exist); the
  stored version then becomes ``expected_version + 1``. A version mismatch returns ``CONFLICT`` with
  the current stored session in ``merged_from``; a tombstoned session, or one expected to exist but
  absent, returns ``GONE``. Attributes not named in ``changed`` or ``removed`` are left as stored,
  unless ``full`` is set, when the stored attributes become exactly ``changed``. A backend that
  holds a lock on the row may instead merge at once, under that lock: write ``_rebase(request,
  current)`` and return ``SAVED`` with ``merged_from=current``. Returning ``CONFLICT`` releases the
  row before the retry, so a session that other writers keep changing may never be merged within
  ``max_merge_rounds``; merging under the lock always converges.
* ``_touch_batch(touches)``: raise ``last_access_at`` (never lower it) without changing the version.
* ``_delete(app, token, tombstone_until)``: drop the data and leave a tombstone until that time,
  and append ``(app, token)`` to the invalidation feed in the same atomic step.
* ``_invalidations_since(cursor)``: the feed entries after ``cursor`` (at most ``limit``, oldest
  first) and the cursor after the last one; with ``cursor=None``, none and the feed's current
  end. A cursor is the store's own sequence (never wall time: nodes' clocks differ), opaque to
  callers. The feed keeps an entry at least as long as its tombstone (pruned with it, or by a
  bound on its length far above what nodes polling every second fall behind by).
* ``_delete_expired(before, limit)``: delete at most ``limit`` live sessions whose ``expires_at`` is
  before ``before`` and return them; the deletion and the return are one atomic step, so when several
  nodes sweep at once each expired session is returned to exactly one of them. Tombstones whose time
  has passed are purged too, and not returned.
* ``_counts(now)``: live and expired-awaiting-sweep sessions per app.
* ``_sessions_of(app, owner)``: the stored sessions of ``app`` bound to ``owner``, found through an
  owner index (never a scan of the app), in any order. Stored: not tombstoned; an expired one the
  sweep has not reached yet included, here and in ``_list_sessions``.
* ``_list_sessions(app, after, limit)``: at most ``limit`` stored sessions of ``app`` whose token
  sorts after ``after`` (``None``: from the first), in token order: a page of the console's list.
* ``_close()``.
* ``transient_errors``: the driver exceptions that mean "try again" (connection lost, timeout).
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import ClassVar, TypeVar

from .. import forks
from ..clock import Clock, SystemClock
from ..errors import CorruptSessionData, StoreError, StoreUnavailable, ValueTooLarge
from .fence import Fenced, unfenced
from .records import (
    CONFLICT,
    SAVED,
    AppCounts,
    ExpiredSession,
    Invalidation,
    RetryPolicy,
    SaveRequest,
    SaveResult,
    SaveStatus,
    StoredSession,
    StoreStats,
    Touch,
    _rebase,
    tombstone_until,
)

log = logging.getLogger("sessionkeeper.store")

T = TypeVar("T")


__all__ = [
    "AppCounts",
    "ExpiredSession",
    "Invalidation",
    "RetryPolicy",
    "SaveRequest",
    "SaveResult",
    "SaveStatus",
    "Store",
    "StoreStats",
    "StoredSession",
    "Touch",
]


class Store(abc.ABC):
    """Base of every store. Subclasses implement the hooks in the abstract section."""

    #: Driver exceptions that mean "try again": connection refused or lost, timeouts.
    transient_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: How many times a conflicting write is rebased and retried within one ``save_many`` call.
    max_merge_rounds: ClassVar[int] = 16
    #: A short name for logs and stats (``"sqlite"``, ``"postgresql"``, ``"redis"``...).
    kind: ClassVar[str] = "store"
    #: How long one wait for the server may take (stores with a server set it from their
    #: ``timeout_s``); part of how stale the invalidation feed may get (feed.py).
    timeout_s: float = 0.0

    def __init__(
        self,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.stats = StoreStats()
        self._stats_lock = threading.Lock()
        self._failed_at = float("-inf")
        #: The largest serialized value this store takes, when it has a limit (``None``: none
        #: known). A larger one is refused by :meth:`save_many` with :class:`ValueTooLarge`
        #: before anything is sent. A backend that learns its limit on connecting sets it then.
        self.max_value_bytes: int | None = None
        #: Where :meth:`failing` and :meth:`count` read the time. A manager gives the store it
        #: uses its own clock, so a fake clock governs the outage backoff too.
        self.clock: Clock = SystemClock()
        #: Called after every attempt of a store operation with ``(op, elapsed_s, error)``, in the
        #: calling thread (``sessionkeeper.metrics`` feeds its latency histogram from it).
        self.observer: Callable[[str, float, bool], None] | None = None
        forks.at_fork_in_child(self, Store._reset_in_child)

    def _reset_in_child(self) -> None:
        self._stats_lock = threading.Lock()  # a thread of the parent may have held it
        self._after_fork()

    # -- the shared rules ---------------------------------------------------------------------

    def _call(self, op: str, fn: Callable[[], T], *, mark_failing: bool = True) -> T:
        delay = self.retry.backoff_s
        retryable: tuple[type[BaseException], ...] = (*self.transient_errors, Fenced)
        for attempt in range(1, self.retry.attempts + 1):
            started = time.perf_counter()
            try:
                result = fn()
            except retryable as exc:
                self._observe(op, time.perf_counter() - started, error=True)
                if attempt == self.retry.attempts:
                    with self._stats_lock:
                        if mark_failing:
                            self.stats.available = False
                            self._failed_at = self.clock.monotonic()
                    log.warning(
                        "store %s %s failed after %d attempts: %s",
                        self.kind,
                        op,
                        attempt,
                        exc,
                        extra={"sk_code": StoreUnavailable.code},  # exc is the driver's
                    )
                    raise StoreUnavailable(
                        f"{self.kind} store unavailable during {op} after {attempt} attempts: {exc}"
                    ) from exc
                with self._stats_lock:
                    self.stats.retries += 1
                self._sleep(delay)
                delay = min(delay * 2, self.retry.max_backoff_s)
                continue
            except (StoreError, CorruptSessionData):
                # Corrupt data is the caller's to handle (report it, replace the session), not a
                # store failure to wrap.
                self._observe(op, time.perf_counter() - started, error=True)
                raise
            except Exception as exc:
                self._observe(op, time.perf_counter() - started, error=True)
                raise StoreError(f"{self.kind} store error during {op}: {exc!r}") from exc
            self._observe(op, time.perf_counter() - started, error=False)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _observe(self, op: str, elapsed_s: float, *, error: bool) -> None:
        observer = self.observer
        if observer is not None:
            observer(op, elapsed_s, error)
        with self._stats_lock:
            s = self.stats
            s.calls += 1
            s.latency_total_s += elapsed_s
            if elapsed_s > s.latency_max_s:
                s.latency_max_s = elapsed_s
            if error:
                s.errors += 1
            else:
                s.available = True

    def failing(self, within_s: float) -> bool:
        """Whether the last call gave up (``StoreUnavailable``) less than ``within_s`` seconds
        ago and no call has succeeded since. Callers use it to skip optional work during an
        outage instead of paying every retry again."""
        if self.stats.available:  # the common answer, without the lock: False either way
            return False
        with self._stats_lock:
            return not self.stats.available and self.clock.monotonic() - self._failed_at < within_s

    # -- public API ----------------------------------------------------------------------------

    def load(self, app: str, token: str) -> StoredSession | None:
        """The live session, or ``None`` (never stored, deleted, or invalidated)."""
        result = self._call("load", lambda: self._load(app, token))
        with self._stats_lock:
            self.stats.reads += 1
        return result

    def save_many(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        """Write a batch. A version conflict is merged: the request is rebased on the newer stored
        version (its changed and removed keys applied on top) and written again."""
        if not requests:
            return []
        if self.max_value_bytes is not None:
            self._check_value_sizes(requests)
        results = self._save_unfenced(requests)
        pending: dict[int, StoredSession] = {}
        for i, r in enumerate(results):
            if r.status is CONFLICT and r.merged_from is not None:
                pending[i] = r.merged_from
        rounds = 0
        while pending and rounds < self.max_merge_rounds:
            rounds += 1
            if rounds > 1:
                # Writers racing on one session would collide again in lockstep: back off a
                # little, at random, so one of them gets through.
                self._sleep(random.uniform(0, min(0.001 * 2**rounds, 0.05)))
            order = list(pending)
            rebased = [_rebase(requests[i], pending[i]) for i in order]
            again = self._save_unfenced(rebased)
            retry: dict[int, StoredSession] = {}
            for i, res in zip(order, again, strict=True):
                if res.status is SAVED:
                    results[i] = dataclasses.replace(res, merged_from=pending[i])
                elif res.status is CONFLICT and res.merged_from is not None:
                    retry[i] = res.merged_from
                else:
                    results[i] = res
            pending = retry
        with self._stats_lock:
            stats = self.stats
            stats.write_batches += 1
            for req, res in zip(requests, results, strict=True):
                if res.status is SAVED:
                    stats.sessions_written += 1
                    # Merged (here or by the backend): the rebased write carried only this
                    # node's own changes (``_rebase``), not the rest of a stale full copy.
                    carried = req.changed if res.merged_from is None else req.own_changes
                    for blob in carried.values():
                        stats.bytes_written += len(blob)
                    if res.merged_from is not None:
                        stats.conflicts_merged += 1
        return results

    def _save_unfenced(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        """``_save_batch`` under the retries, a write refused by its deadline fence sent again
        (:func:`.fence.unfenced`): no result is ``FENCED``."""
        return self._call("save", unfenced(self._save_batch, requests, self._refused))

    def _refused(self, fenced: int) -> None:
        with self._stats_lock:
            self.stats.writes_fenced += fenced
        self._fenced()

    def _fenced(self) -> None:
        """A write was refused by its deadline fence: a backend that sends fences measures the
        server's clock again before its next write. The others never answer ``FENCED``."""
        return None

    def _check_value_sizes(self, requests: Sequence[SaveRequest]) -> None:
        """Raise :class:`ValueTooLarge` for the first value over ``max_value_bytes``."""
        limit = self.max_value_bytes
        if limit is None:
            return
        for r in requests:
            for key, blob in r.changed.items():
                if len(blob) > limit:
                    raise ValueTooLarge(r.token, key, len(blob), limit, app=r.app)

    def touch_many(self, touches: Sequence[Touch]) -> None:
        """Raise the access time of sessions whose attributes did not change."""
        if not touches:
            return
        self._call("touch", lambda: self._touch_batch(touches))
        with self._stats_lock:
            self.stats.touches += len(touches)

    def delete(self, app: str, token: str, *, tombstone_until: float) -> bool:
        """Delete a session, leaving a tombstone so that an in-flight write cannot bring it back.

        Returns whether a live session was there."""
        deleted = self._call("delete", lambda: self._delete(app, token, tombstone_until))
        with self._stats_lock:
            self.stats.deletes += 1
        return deleted

    def invalidations_since(
        self, cursor: str | None, limit: int = 1000, *, probe: bool = False
    ) -> tuple[list[Invalidation], str]:
        """The ids ended since ``cursor`` (oldest first, at most ``limit``) and the cursor to
        pass next time; ``cursor=None`` starts at the feed's current end (no entries). One cheap
        query; every node's housekeeping calls it each poll. With ``probe`` (a request reading
        it before trusting a cached copy) a failure does not make :meth:`failing` true: whether
        requests write inline during an outage stays decided by their writes."""
        if limit <= 0:
            raise ValueError("limit must be positive")
        return self._call(
            "invalidations",
            lambda: self._invalidations_since(cursor, limit),
            mark_failing=not probe,
        )

    def delete_expired(self, before: float, limit: int = 1000) -> list[ExpiredSession]:
        """Delete up to ``limit`` sessions that expired before ``before``; each is returned to exactly
        one caller, so exactly one node fires its destroyed event."""
        if limit <= 0:
            raise ValueError("limit must be positive")
        return self._call("delete_expired", lambda: self._delete_expired(before, limit))

    def count(self, app: str | None = None, *, now: float | None = None) -> int:
        """Live (unexpired at ``now``, default: :attr:`clock`'s) sessions, of one app or all."""
        counts = self.counts_by_app(now if now is not None else self.clock.time())
        if app is not None:
            c = counts.get(app)
            return c.live if c else 0
        return sum(c.live for c in counts.values())

    def counts_by_app(self, now: float) -> dict[str, AppCounts]:
        return self._call("count", lambda: self._counts(now))

    def sessions_of(self, app: str, owner: str) -> list[StoredSession]:
        """The stored sessions of ``app`` bound to ``owner``, in token order."""
        found = self._call("sessions_of", lambda: self._sessions_of(app, owner))
        return sorted((s for s in found if s.owner == owner), key=lambda s: s.token)

    def delete_owner(self, app: str, owner: str, *, grace_s: float) -> list[StoredSession]:
        """Delete every session of ``app`` bound to ``owner`` (logout everywhere), each through
        :meth:`delete`: tombstoned, as an invalidation on one node is, so whatever a delete
        tells other nodes it tells them here too. Each tombstone lasts from now (:attr:`clock`)
        until its session would have expired (idle, or at its deadline) plus ``grace_s``, as a
        node's own invalidation leaves it (:func:`.records.tombstone_until`).
        Returns the sessions this call ended (a session another caller deleted meanwhile is not
        in it), so exactly one caller fires each destroyed event. A session created for the
        owner while this runs may survive it."""
        ended = []
        for s in self.sessions_of(app, owner):
            until = tombstone_until(self.clock.time(), s.timeout_s, s.absolute_expires_at, grace_s)
            if self.delete(app, s.token, tombstone_until=until):
                ended.append(s)
        return ended

    def list_sessions(
        self, app: str, *, after: str | None = None, limit: int = 50
    ) -> list[StoredSession]:
        """A page of the stored sessions of ``app`` in token order: those after the token
        ``after`` (``None``: from the first). Pass the last token of a page to get the next."""
        if limit <= 0:
            raise ValueError("limit must be positive")
        return self._call("list", lambda: self._list_sessions(app, after, limit))

    def set_grace_s(self, grace_s: float) -> None:
        """The sweep grace of a manager using this store (called at its construction): how long
        after its timeout a session may still be kept alive by another node's unwritten access.
        A store that also expires sessions on its own (Redis TTLs) keeps each at least that long;
        the others ignore it."""
        return None  # a backstop only the stores that expire sessions themselves have

    def close(self) -> None:
        self._close()

    def _after_fork(self) -> None:
        """In a child just forked (one thread runs): forget what belongs to the parent, such
        as pooled connections, without closing it. A backend with such state overrides this."""
        return None

    def describe(self) -> str:
        """Where this store keeps its data, without credentials."""
        return self.kind

    # -- abstract section: what a backend provides ------------------------------------------

    @abc.abstractmethod
    def _load(self, app: str, token: str) -> StoredSession | None: ...

    @abc.abstractmethod
    def _save_batch(self, requests: Sequence[SaveRequest]) -> list[SaveResult]: ...

    @abc.abstractmethod
    def _touch_batch(self, touches: Sequence[Touch]) -> None: ...

    @abc.abstractmethod
    def _delete(self, app: str, token: str, tombstone_until: float) -> bool: ...

    @abc.abstractmethod
    def _invalidations_since(
        self, cursor: str | None, limit: int
    ) -> tuple[list[Invalidation], str]: ...

    @abc.abstractmethod
    def _delete_expired(self, before: float, limit: int) -> list[ExpiredSession]: ...

    @abc.abstractmethod
    def _counts(self, now: float) -> dict[str, AppCounts]: ...

    @abc.abstractmethod
    def _sessions_of(self, app: str, owner: str) -> list[StoredSession]: ...

    @abc.abstractmethod
    def _list_sessions(self, app: str, after: str | None, limit: int) -> list[StoredSession]: ...

    @abc.abstractmethod
    def _close(self) -> None: ...
