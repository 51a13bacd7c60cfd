"""``MemoryStore``: a dict in this process. For tests and single-process apps; nothing survives
the process, and other processes cannot see it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .base import (
    AppCounts,
    ExpiredSession,
    Invalidation,
    RetryPolicy,
    SaveRequest,
    SaveResult,
    Store,
    StoredSession,
    Touch,
)
from .records import CONFLICT, GONE, SAVED


@dataclass
class _Row:
    attributes: dict[str, bytes]
    version: int
    created_at: float
    last_access_at: float
    timeout_s: float
    owner: str | None
    node: str | None
    tombstone_until: float | None = None
    absolute_expires_at: float | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def expires_at(self) -> float:
        idle = self.last_access_at + self.timeout_s
        return idle if self.absolute_expires_at is None else min(idle, self.absolute_expires_at)


class MemoryStore(Store):
    kind = "memory"

    def __init__(
        self, *, retry: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        super().__init__(retry=retry, sleep=sleep)
        self._rows: dict[tuple[str, str], _Row] = {}
        # The invalidation feed: (sequence, entry, kept until), in sequence order.
        self._feed: list[tuple[int, Invalidation, float]] = []
        self._seq = 0
        #: The owner index: (app, owner) -> tokens, kept with the rows under the same lock.
        self._by_owner: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()

    def _index(self, app: str, token: str, old: str | None, new: str | None) -> None:
        """Move ``token`` from ``old``'s entry of the owner index to ``new``'s."""
        if old == new:
            return
        if old is not None:
            tokens = self._by_owner.get((app, old), set())
            tokens.discard(token)
            if not tokens:
                self._by_owner.pop((app, old), None)
        if new is not None:
            self._by_owner.setdefault((app, new), set()).add(token)

    def _snapshot(self, app: str, token: str, row: _Row) -> StoredSession:
        return StoredSession(
            app=app,
            token=token,
            attributes=dict(row.attributes),
            version=row.version,
            created_at=row.created_at,
            last_access_at=row.last_access_at,
            timeout_s=row.timeout_s,
            owner=row.owner,
            node=row.node,
            absolute_expires_at=row.absolute_expires_at,
        )

    def _load(self, app: str, token: str) -> StoredSession | None:
        with self._lock:
            row = self._rows.get((app, token))
            if row is None or row.tombstone_until is not None:
                return None
            return self._snapshot(app, token, row)

    def _save_one(self, req: SaveRequest) -> SaveResult:
        key = (req.app, req.token)
        row = self._rows.get(key)
        if row is not None and row.tombstone_until is not None:
            return SaveResult(GONE)
        if row is None:
            if req.expected_version != 0:
                return SaveResult(GONE)
            self._rows[key] = _Row(
                attributes=dict(req.changed),
                version=1,
                created_at=req.created_at,
                last_access_at=req.last_access_at,
                timeout_s=req.timeout_s,
                owner=req.owner,
                node=req.node,
                absolute_expires_at=req.absolute_expires_at,
            )
            self._index(req.app, req.token, None, req.owner)
            return SaveResult(SAVED, 1)
        if row.version != req.expected_version:
            return SaveResult(CONFLICT, row.version, self._snapshot(req.app, req.token, row))
        if req.full:
            row.attributes = dict(req.changed)
        else:
            row.attributes.update(req.changed)
            for name in req.removed:
                row.attributes.pop(name, None)
        row.version += 1
        row.last_access_at = max(row.last_access_at, req.last_access_at)
        row.timeout_s = req.timeout_s
        row.absolute_expires_at = req.absolute_expires_at
        if row.owner != req.owner:
            self._index(req.app, req.token, row.owner, req.owner)
            row.owner = req.owner
        row.node = req.node
        return SaveResult(SAVED, row.version)

    def _save_batch(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        with self._lock:
            return [self._save_one(r) for r in requests]

    def _touch_batch(self, touches: Sequence[Touch]) -> None:
        with self._lock:
            for t in touches:
                row = self._rows.get((t.app, t.token))
                if row is not None and row.tombstone_until is None:
                    row.last_access_at = max(row.last_access_at, t.last_access_at)

    def _delete(self, app: str, token: str, tombstone_until: float) -> bool:
        with self._lock:
            row = self._rows.get((app, token))
            live = row is not None and row.tombstone_until is None
            if row is not None:
                self._index(app, token, row.owner, None)
            self._rows[(app, token)] = _Row({}, 0, 0.0, 0.0, 0.0, None, None, tombstone_until)
            self._seq += 1
            self._feed.append((self._seq, Invalidation(app, token), tombstone_until))
            return live

    def _invalidations_since(
        self, cursor: str | None, limit: int
    ) -> tuple[list[Invalidation], str]:
        with self._lock:
            if cursor is None:
                return [], str(self._seq)
            after = int(cursor)
            entries = [(n, e) for n, e, _ in self._feed if n > after][:limit]
            return [e for _, e in entries], str(entries[-1][0] if entries else after)

    def _delete_expired(self, before: float, limit: int) -> list[ExpiredSession]:
        out: list[ExpiredSession] = []
        with self._lock:
            self._feed = [f for f in self._feed if f[2] >= before]  # pruned with the tombstones
            for key, row in list(self._rows.items()):
                if row.tombstone_until is not None:
                    if row.tombstone_until < before:
                        del self._rows[key]
                    continue
                if row.expires_at < before and len(out) < limit:
                    del self._rows[key]
                    self._index(key[0], key[1], row.owner, None)
                    out.append(
                        ExpiredSession(key[0], key[1], row.last_access_at, row.timeout_s, row.owner)
                    )
        return out

    def _counts(self, now: float) -> dict[str, AppCounts]:
        live: dict[str, int] = {}
        expired: dict[str, int] = {}
        with self._lock:
            for (app, _), row in self._rows.items():
                if row.tombstone_until is not None:
                    continue
                bucket = expired if row.expires_at < now else live
                bucket[app] = bucket.get(app, 0) + 1
        return {a: AppCounts(live.get(a, 0), expired.get(a, 0)) for a in live.keys() | expired}

    def _sessions_of(self, app: str, owner: str) -> list[StoredSession]:
        with self._lock:
            tokens = self._by_owner.get((app, owner), set())
            return [self._snapshot(app, t, self._rows[(app, t)]) for t in tokens]

    def _list_sessions(self, app: str, after: str | None, limit: int) -> list[StoredSession]:
        with self._lock:
            page = sorted(
                token
                for (a, token), row in self._rows.items()
                if a == app and row.tombstone_until is None and (after is None or token > after)
            )[:limit]
            return [self._snapshot(app, t, self._rows[(app, t)]) for t in page]

    def _close(self) -> None:
        pass
