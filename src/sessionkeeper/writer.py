"""Copying sessions to the store: building the batch, and applying what the store answered.

The writer decides nothing about *when* (that is the policy's and the manager's job); it turns a
set of sessions into one ``save_many`` call, and on failure puts every change back so nothing dirty
is ever dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import CorruptSessionData, StoreError
from .serialization import Serializer
from .session import Session
from .stats import Stats
from .stores.base import SaveRequest, SaveResult, SaveStatus, Store, StoredSession, Touch

log = logging.getLogger("sessionkeeper.writer")

Contents = Literal["updated", "accessed", "all"]


@dataclass
class _Taken:
    """The change tracking taken out of a session for one write, to put back if it fails."""

    session: Session
    request: SaveRequest
    set_keys: set[str]
    deleted_keys: set[str]
    read_keys: set[str]
    meta_changed: bool
    updates: int
    requests: int


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
        self.stats = stats
        self.contents = contents
        self._node = node
        self._may_recreate = may_recreate  # InvalidationFeed.may_recreate

    def _dumps(self, s: Session, key: str, value: Any) -> bytes | None:
        try:
            return self.serializer.dumps(value)
        except (TypeError, ValueError, RecursionError) as exc:
            # The value passed the check when it was set and was mutated in place since.
            log.error(
                "session %s attribute %r can no longer be serialized and is not written: %s",
                s.token[:8],
                key,
                exc,
            )
            return None

    def _take(self, s: Session) -> _Taken | None:
        """Snapshot what to write and clear the tracking, under the session's lock.
        ``None`` when nothing but the access time changed."""
        with s.lock:
            data = s.data_view()
            full = self.contents == "all" or not s.in_store
            if full:
                keys: set[str] = set(data)
            else:
                keys = set(s.set_keys)
                if self.contents == "accessed":
                    keys |= s.read_keys
            changed: dict[str, bytes] = {}
            for key in keys:
                if key not in data:
                    continue
                blob = self._dumps(s, key, data[key])
                if blob is None:
                    continue
                if not full and key not in s.set_keys and s.stored_hashes.get(key) == hash(blob):
                    continue  # read, not changed
                changed[key] = blob
            removed = frozenset(s.deleted_keys)
            if s.in_store and not changed and not removed and not s.meta_changed:
                s.read_keys = set()  # read, compared, unchanged: nothing to write
                return None
            taken = _Taken(
                session=s,
                request=SaveRequest(
                    app=s.app,
                    token=s.token,
                    expected_version=s.version,
                    created_at=s.created_at,
                    last_access_at=s.last_access_at,
                    timeout_s=s.timeout_s,
                    changed=changed,
                    removed=removed,
                    full=full,
                    owner=s.owner,
                    node=self._node(),
                ),
                set_keys=s.set_keys,
                deleted_keys=s.deleted_keys,
                read_keys=s.read_keys,
                meta_changed=s.meta_changed,
                updates=s.updates_since_write,
                requests=s.requests_since_write,
            )
            s.set_keys, s.deleted_keys, s.read_keys = set(), set(), set()
            s.meta_changed = False
            s.updates_since_write = s.requests_since_write = 0
            return taken

    @staticmethod
    def _put_back(t: _Taken) -> None:
        s = t.session
        with s.lock:
            s.set_keys |= t.set_keys - s.deleted_keys
            s.deleted_keys |= t.deleted_keys - s.set_keys
            s.read_keys |= t.read_keys
            s.meta_changed = s.meta_changed or t.meta_changed
            s.updates_since_write += t.updates
            s.requests_since_write += t.requests

    def write(
        self, sessions: Sequence[Session], now: float, *, raise_errors: bool = False
    ) -> tuple[list[Session], list[Session]]:
        """Write ``sessions`` in one batch. Returns ``(written, gone)``: ``gone`` sessions were
        invalidated on another node meanwhile and must be dropped; a session whose row the store
        lost is written again whole. Sessions that failed stay dirty; with ``raise_errors`` the
        store's error is raised after putting them back."""
        taken: list[_Taken] = []
        touched: list[Session] = []
        locked: list[Session] = []
        try:
            for s in sessions:
                s.write_lock.acquire()
                locked.append(s)
                t = self._take(s)
                if t is not None:
                    taken.append(t)
                elif s.last_access_at > s.last_store_access_at:
                    touched.append(s)
            results = self._save(taken, raise_errors)
            if results is None:
                return [], []
            written: list[Session] = []
            gone: list[Session] = []
            missing: list[Session] = []
            for t, res in zip(taken, results, strict=True):
                lost = res.status is SaveStatus.GONE and t.request.expected_version > 0
                if lost and self._may_recreate(t.session, now):
                    missing.append(self._as_unstored(t))
                elif lost:
                    self.stats.add("not_recreated")
                    log.warning(
                        "session %s is missing from the store and this node has not seen it "
                        "live within its timeout: dropped, not written again",
                        t.session.token[:8],
                    )
                    gone.append(t.session)
                elif self._apply(t, res, now):
                    written.append(t.session)
                elif res.status is SaveStatus.GONE:
                    gone.append(t.session)
            if missing:
                self._recreate(missing, now, written, gone, raise_errors)
            # After the saves are applied: a failed touch must not put back what was saved.
            try:
                self.touch(touched)
            except StoreError:
                if raise_errors:
                    raise
            return written, gone
        finally:
            for s in locked:
                s.write_lock.release()

    def _save(self, taken: list[_Taken], raise_errors: bool) -> list[SaveResult] | None:
        """One ``save_many`` of the taken changes; on a store error every change is put back
        (``None``, or the error with ``raise_errors``)."""
        try:
            return self.store.save_many([t.request for t in taken])
        except StoreError:
            for t in taken:
                self._put_back(t)
            self.stats.add("write_failures", len(taken))
            if raise_errors:
                raise
            return None

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
        raise_errors: bool,
    ) -> None:
        """GONE means a tombstone or a missing row. Only a tombstone (an invalidation) must not
        come back; a row the store lost (a Redis restart without persistence, a restored
        database) is written again, whole, from this node's copy. The store answers GONE again
        for a tombstone; ``may_recreate`` (checked by the caller) keeps out copies whose
        tombstone may already be gone."""
        taken = [t for t in map(self._take, sessions) if t is not None]
        results = self._save(taken, raise_errors)
        if results is None:
            return
        for t, res in zip(taken, results, strict=True):
            if self._apply(t, res, now):
                self.stats.add("recreated")
                log.warning(
                    "session %s was missing from the store (was its data lost?): "
                    "written again from this node's copy",
                    t.session.token[:8],
                )
                written.append(t.session)
            elif res.status is SaveStatus.GONE:
                gone.append(t.session)

    def touch(self, sessions: Sequence[Session]) -> None:
        """Write the access time of sessions whose attributes did not change."""
        if not sessions:
            return
        touches = [Touch(s.app, s.token, s.last_access_at) for s in sessions]
        self.store.touch_many(touches)
        for s, t in zip(sessions, touches, strict=True):
            s.last_store_access_at = max(s.last_store_access_at, t.last_access_at)
        self.stats.add("touches", len(touches))

    def _apply(self, t: _Taken, res: SaveResult, now: float) -> bool:
        s, req = t.session, t.request
        if res.status is SaveStatus.GONE:
            self.stats.add("gone_on_write")
            log.info(
                "session %s was invalidated elsewhere; its unwritten changes are dropped",
                s.token[:8],
            )
            return False
        if res.status is SaveStatus.CONFLICT:
            self._put_back(t)
            self.stats.add("write_failures")
            log.warning("session %s: write still conflicting after merges; kept dirty", s.token[:8])
            return False
        with s.lock:
            s.version = res.version
            s.in_store = True
            s.last_write_at = now
            s.last_store_access_at = max(s.last_store_access_at, req.last_access_at)
            if self.contents == "accessed":
                for key, blob in req.changed.items():
                    s.stored_hashes[key] = hash(blob)
                for key in req.removed:
                    s.stored_hashes.pop(key, None)
            if res.merged_from is not None:
                self._merge(s, req, res.merged_from)
        return True

    def _merge(self, s: Session, req: SaveRequest, other: StoredSession) -> None:
        """After a merged write, take into the local copy the keys only the other node changed."""
        self.stats.add("conflicts_merged")
        overwritten = sum(
            1 for k, v in req.changed.items() if k in other.attributes and other.attributes[k] != v
        )
        if overwritten:
            self.stats.add("conflict_overwrites", overwritten)
        data = s.data_view()
        mine = set(req.changed) | req.removed | s.set_keys | s.deleted_keys
        for key, blob in other.attributes.items():
            if key in mine:
                continue
            try:
                data[key] = self.serializer.loads(blob)
            except CorruptSessionData:
                log.error(
                    "session %s: unreadable attribute %r from another node ignored",
                    s.token[:8],
                    key,
                )
        for key in [k for k in data if k not in other.attributes and k not in mine]:
            del data[key]  # removed by the other node
