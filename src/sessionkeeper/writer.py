"""Copying sessions to the store: building the batch, and applying what the store answered.

The writer decides nothing about *when* (that is the policy's and the manager's job); it turns a
set of sessions into one ``save_many`` call, and on failure puts every change back so nothing dirty
is ever dropped. One session's failure never costs another its write: an error that is not an
outage is isolated to the session that causes it (see :meth:`Writer._save`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from .changes import Taken
from .errors import CorruptSessionData, StoreError, StoreUnavailable
from .logs import fields, session_hash
from .merged import take_merged
from .serialization import Serializer, place, uses_place
from .session import Session
from .stats import Stats
from .stores.base import SaveRequest, SaveResult, Store, Touch
from .stores.records import CONFLICT, GONE

log = logging.getLogger("sessionkeeper.writer")

Contents = Literal["updated", "accessed", "all"]


def _order(s: Session) -> tuple[str, str]:
    return s.app, s.token


@dataclass(slots=True)
class _Taken:
    """One session's write: the request, and the change tracking taken out for it, to put back
    if it fails."""

    session: Session
    request: SaveRequest
    changes: Taken


class Writer:
    def __init__(
        self,
        store: Store,
        serializer: Serializer,
        stats: Stats,
        contents: Contents,
        node: Callable[[], str],
        *,
        may_recreate: Callable[[Session, float], bool],
    ) -> None:
        self.store = store
        self.serializer = serializer
        self._placed = uses_place(serializer)  # else no place to build per value written
        self.stats = stats
        self.contents = contents
        self._node = node
        self._may_recreate = may_recreate  # InvalidationFeed.may_recreate

    def _unserializable(self, s: Session, key: str, exc: Exception) -> None:
        # The value passed the check when it was set and was mutated in place since.
        self.stats.add("unserializable_values")
        log.error(
            "session %s attribute %r can no longer be serialized: not written (its stored "
            "value is kept) and the session kept dirty: %s",
            session_hash(s.app, s.token),
            key,
            exc,
            extra=fields(s.app, s.token),
        )

    def _blobs(self, s: Session, full: bool) -> tuple[dict[str, bytes], frozenset[str], list[str]]:
        """The bytes to write per key; the keys of those this copy changed (set, or bytes that
        differ from what it last read or wrote: the others a full write carries along); and the
        keys whose value cannot be serialized any more. The caller holds the session's lock."""
        data = s.data_view()
        tracked = s.changes
        set_keys = tracked.set_keys  # a view built per call: once, not per key
        if full:
            keys: set[str] = set(data)
        else:
            keys = set(set_keys)
            if self.contents == "accessed":
                keys |= tracked.read_keys
        changed: dict[str, bytes] = {}
        own: set[str] = set()
        failed: list[str] = []
        dumps, placed = self.serializer.dumps, self._placed  # else no place to build per value
        for key in keys:
            if key not in data:
                continue
            try:
                blob = dumps(data[key], place=place(s.app, s.token, key) if placed else b"")
            except (TypeError, ValueError, RecursionError) as exc:
                self._unserializable(s, key, exc)
                failed.append(key)
                continue
            if key in set_keys or s.stored_hashes.get(key) != hash(blob):
                own.add(key)
            if full or key in own:  # else read, not changed
                changed[key] = blob
        return changed, frozenset(own), failed

    def _take(self, s: Session) -> _Taken | None:
        return self._take_checked(s)[0]

    def _take_checked(self, s: Session) -> tuple[_Taken | None, bool]:
        """Snapshot what to write and clear the tracking, under the session's lock, and whether
        every change was taken (none left behind unserializable). ``None`` when nothing but the
        access time changed. A key whose value cannot be
        serialized stays marked set, so the session stays dirty; and the write becomes a
        partial one, which leaves that key's stored value in place (a full write would
        delete it)."""
        with s.lock:
            tracked = s.changes
            full = self.contents == "all" or not s.in_store
            changed, own, failed = self._blobs(s, full)
            full = full and not (failed and s.in_store)
            removed = frozenset(tracked.deleted_keys)
            taken: _Taken | None = None
            if s.in_store and not changed and not removed and not tracked.meta_changed:
                tracked.forget_reads()  # read, compared, unchanged: nothing to write
            else:
                request = SaveRequest(
                    app=s.app,
                    token=s.token,
                    expected_version=s.version,
                    created_at=s.created_at,
                    last_access_at=s.last_access_at,
                    timeout_s=s.timeout_s,
                    absolute_expires_at=s.absolute_expires_at,
                    changed=changed,
                    removed=removed,
                    full=full,
                    owner=s.owner,
                    node=self._node(),
                    own=own if len(own) < len(changed) else None,
                    # The owner is recorded as a change of metadata; unchanged, the stored row
                    # at this version holds this copy's owner.
                    owner_changed=tracked.meta_changed or not s.in_store,
                )
                taken = _Taken(session=s, request=request, changes=tracked.take())
            for key in failed:
                tracked.put_key_state(key, True, False)
            return taken, not failed

    @staticmethod
    def _put_back(t: _Taken) -> None:
        t.session.changes.restore(t.changes)

    def write(
        self, sessions: Sequence[Session], now: float, *, raise_errors: bool = False
    ) -> tuple[list[Session], list[Session], list[Session]]:
        """Write ``sessions`` in one batch. Returns ``(written, gone, current)``: ``current``
        sessions had nothing to write (another write carried their changes); ``gone`` sessions were
        invalidated on another node meanwhile, or expired and swept, and must be dropped; a live
        session whose row the store lost is written again whole. ``now`` is a monotonic reading
        (``last_write_at``). Sessions that failed stay dirty; with ``raise_errors`` the first
        error is raised after every other session's result was applied."""
        taken: list[_Taken] = []
        touched: list[Session] = []
        current: list[Session] = []
        locked: list[threading.Lock] = []
        try:
            # One total order, (app, token), wherever several sessions are held: two batches
            # taken in cache order (which requests keep changing) would wait on each other.
            ordered = sessions if len(sessions) == 1 else sorted(sessions, key=_order)
            for s in ordered:
                lock = s.write_lock
                lock.acquire()
                locked.append(lock)
                t, complete = self._take_checked(s)
                if t is not None:
                    taken.append(t)
                    continue
                if complete:
                    current.append(s)
                if s.last_access_at > s.last_store_access_at:
                    touched.append(s)
            results, error = self._save(taken)
            written: list[Session] = []
            gone: list[Session] = []
            missing: list[Session] = []
            wall_now: float | None = None  # read once, when a row turns out lost
            for t, res in zip(taken, results, strict=True):
                if res is None:
                    continue  # not written, put back by _save
                if res.status is GONE and t.request.expected_version > 0:
                    if wall_now is None:
                        wall_now = self.store.clock.time()  # the manager's, given to its store
                    if self._lost(t, wall_now):
                        missing.append(self._as_unstored(t))
                    else:
                        gone.append(t.session)
                elif self._apply(t, res, now):
                    written.append(t.session)
                elif res.status is GONE:
                    gone.append(t.session)
            if missing:
                error = self._recreate(missing, now, written, gone) or error
            if touched and not isinstance(error, StoreUnavailable):
                # After the saves are applied: a failed touch must not put back what was saved.
                try:
                    self.touch(touched)
                except (StoreError, CorruptSessionData) as exc:
                    error = error or exc
            if error is not None and raise_errors:
                raise error
            return written, gone, current
        finally:
            for lock in locked:
                lock.release()

    def _lost(self, t: _Taken, wall_now: float) -> bool:
        """A stored session's row is gone (GONE at a version above 0): whether to write it again
        whole (the store lost it), else it is dropped (expired and swept, or not seen live
        lately)."""
        s = t.session
        if t.request.expires_at < wall_now:
            # Expired, and its row gone: swept, not lost. Writing it again would bring a dead
            # session back for a second sweep (and destroyed event).
            log.info(
                "session %s expired and was swept: dropped",
                session_hash(s.app, s.token),
                extra=fields(s.app, s.token),
            )
            return False
        if self._may_recreate(s, wall_now):
            return True
        self.stats.add("not_recreated")
        log.warning(
            "session %s is missing from the store and this node has not seen it live within its "
            "timeout: dropped, not written again",
            session_hash(s.app, s.token),
            extra=fields(s.app, s.token),
        )
        return False

    def _save(self, taken: list[_Taken]) -> tuple[list[SaveResult | None], Exception | None]:
        """``save_many`` of the taken changes: one result per change (``None``: not written, its
        tracking put back), and the error met: an outage, else the first refusal.

        An outage (:class:`StoreUnavailable`) puts back every change not yet written. Any other
        error is about some session of the batch (a value the store refuses, a row it cannot
        read to merge): the batch is split in halves, and halves again, so every other session
        is written; the one that fails alone is put back, counted in ``write_failures`` and
        ``write_refusals``, and logged by id, and is tried again with the next write. The store is not marked failing
        for it."""
        results: list[SaveResult | None] = [None] * len(taken)
        refused: list[Session] = []
        error: Exception | None = None
        parts = [(0, len(taken))] if taken else []
        while parts:
            lo, hi = parts.pop()
            try:
                results[lo:hi] = self.store.save_many([t.request for t in taken[lo:hi]])
            except StoreUnavailable as exc:
                for a, b in [(lo, hi), *parts]:
                    for t in taken[a:b]:
                        self._put_back(t)
                    self.stats.add("write_failures", b - a)
                error = exc  # the outage, rather than an earlier refusal
                break
            except (StoreError, CorruptSessionData) as exc:
                if hi - lo > 1:
                    mid = (lo + hi) // 2
                    parts += [(mid, hi), (lo, mid)]  # the first half is tried first
                    continue
                self._put_back(taken[lo])
                refused.append(taken[lo].session)
                error = error or exc
        if refused:
            self._refused(refused, error)
        return results, error

    def _refused(self, sessions: list[Session], first: Exception | None) -> None:
        self.stats.add("write_failures", len(sessions))  # every failed write; of which:
        self.stats.add("write_refusals", len(sessions))
        log.error(
            "%d sessions refused by the store, kept dirty and tried again with their next "
            "write: %s; the first error: %s",
            len(sessions),
            ", ".join(f"{s.app}:{session_hash(s.app, s.token)}" for s in sessions[:20]),
            first,
        )

    def _as_unstored(self, t: _Taken) -> Session:
        s = t.session
        self._put_back(t)
        with s.lock:
            s.version, s.in_store = 0, False
        return s

    def _recreate(
        self,
        sessions: list[Session],
        now: float,
        written: list[Session],
        gone: list[Session],
    ) -> Exception | None:
        """GONE means a tombstone or a missing row. Only a tombstone (an invalidation) must not
        come back; a row the store lost (a Redis restart without persistence, a restored
        database) is written again, whole, from this node's copy. The store answers GONE again
        for a tombstone; ``may_recreate`` (checked by the caller) keeps out copies whose
        tombstone may already be gone. Returns the error met, if any."""
        taken = [t for t in map(self._take, sessions) if t is not None]
        results, error = self._save(taken)
        for t, res in zip(taken, results, strict=True):
            if res is None:
                continue
            if self._apply(t, res, now):
                self.stats.add("recreated")
                log.warning(
                    "session %s was missing from the store (was its data lost?): "
                    "written again from this node's copy",
                    session_hash(t.session.app, t.session.token),
                    extra=fields(t.session.app, t.session.token),
                )
                written.append(t.session)
            elif res.status is GONE:
                gone.append(t.session)
        return error

    def touch(self, sessions: Sequence[Session]) -> None:
        """Write the access time of sessions whose attributes did not change. A failure is
        counted (``touch_failures``), logged, and raised; the sessions stay due."""
        if not sessions:
            return
        touches = [Touch(s.app, s.token, s.last_access_at) for s in sessions]
        try:
            self.store.touch_many(touches)
        except (StoreError, CorruptSessionData) as exc:
            # last_store_access_at stays behind, so the next flush touches them again; until
            # then another node's sweep could see them as idle.
            self.stats.add("touch_failures", len(touches))
            log.warning(
                "the access time of %d sessions was not written (touched again with the next "
                "flush): %s: %s",
                len(touches),
                ", ".join(session_hash(s.app, s.token) for s in sessions[:20]),
                exc,
            )
            raise
        for s, t in zip(sessions, touches, strict=True):
            s.last_store_access_at = max(s.last_store_access_at, t.last_access_at)
        self.stats.add("touches", len(touches))

    def _apply(self, t: _Taken, res: SaveResult, now: float) -> bool:
        s, req = t.session, t.request
        if res.status is GONE:
            self.stats.add("gone_on_write")
            log.info(
                "session %s was invalidated elsewhere; its unwritten changes are dropped",
                session_hash(s.app, s.token),
                extra=fields(s.app, s.token),
            )
            return False
        if res.status is CONFLICT:
            self._put_back(t)
            self.stats.add("write_failures")
            log.warning(
                "session %s: write still conflicting after merges; kept dirty",
                session_hash(s.app, s.token),
                extra=fields(s.app, s.token),
            )
            return False
        with s.lock:
            s.version = res.version
            s.in_store = True
            s.last_write_at = now
            if req.last_access_at > s.last_store_access_at:  # never lowered
                s.last_store_access_at = req.last_access_at
            if self.contents != "updated":
                # What the store now holds of this copy's keys: after a merge, only its own.
                written = req.changed if res.merged_from is None else req.own_changes
                if req.full and res.merged_from is None:
                    s.stored_hashes = {}
                hashes = s.own_hashes()
                for key, blob in written.items():
                    hashes[key] = hash(blob)
                for key in req.removed:
                    s.stored_hashes.pop(key, None)
            if res.merged_from is not None:
                take_merged(s, req, res.merged_from, self.serializer, self.stats, self.contents)
        return True
