"""``Owned``: what the owner of a session remembers about its replication.

Per owned session: the epoch it owns it at, the replication version (one per changed request),
its backups (as frozen in the id), and the attribute bytes as last replicated, from which the
next request's delta is computed, and the timeout, deadline and principal last sent (a request
that changes only those is replicated too). ``parked`` holds a session handed to this node (a handoff, or a
copy taken over) that no request has asked for yet. ``retired`` are the nodes that were its
backups and were replaced (they did not answer in time): each may still hold a copy, until it is
told to drop it (:meth:`Owned.set_backups`, and the owner's housekeeping). ``lock`` orders one
session's sends.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..serialization import Serializer
from ..session import Session
from .backups import Copy, Delta

Meta = tuple[float, float | None, str | None]


@dataclass(eq=False)
class Owned:
    epoch: int
    version: int
    backups: tuple[str, ...]
    blobs: dict[str, bytes] = field(default_factory=dict)
    needs_full: bool = True  # the backups hold nothing (yet) of this epoch
    last_access_sent: float = 0.0
    meta_sent: Meta | None = None  # (timeout_s, deadline, principal) last sent
    parked: Copy | None = None
    retired: tuple[str, ...] = ()  # a tuple: no set allocated per owned session
    changes: int = 0  # requests that ended on it (the ack lag's bookkeeping)
    unacked_since: float | None = None  # monotonic: its oldest change no backup acknowledged
    lock: threading.Lock = field(default_factory=threading.Lock)

    def changed(self, now: float) -> None:
        """A request ended on it (under the replicator's lock): unacknowledged from ``now``
        unless an older change still is."""
        self.changes += 1
        if self.unacked_since is None:
            self.unacked_since = now

    def acked(self, seen: int) -> bool:
        """Its backups hold every change up to the ``seen``-th request (under the
        replicator's lock); a request that ended meanwhile keeps the lag. Whether none is
        unacknowledged now."""
        if self.changes == seen:
            self.unacked_since = None
        return self.unacked_since is None

    def set_backups(self, backups: tuple[str, ...]) -> None:
        """The backups from now on; a backup left out is retired (it may hold a copy), one
        chosen again is not."""
        left = dict.fromkeys((*self.retired, *self.backups))
        self.retired = tuple(b for b in left if b not in backups)
        self.backups = backups


def serialize(s: Session, serializer: Serializer) -> dict[str, bytes]:
    """The session's attributes as bytes, under its lock. A value that can no longer be
    serialized (mutated in place since it was set) is left out, as the writer leaves it."""
    with s.lock:
        data = dict(s.data_view())
    out: dict[str, bytes] = {}
    for key, value in data.items():
        try:
            out[key] = serializer.dumps(value)
        except (TypeError, ValueError, RecursionError):
            continue
    return out


def changes(
    before: dict[str, bytes], after: dict[str, bytes]
) -> tuple[dict[str, bytes], tuple[str, ...]]:
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    removed = tuple(k for k in before if k not in after)
    return changed, removed


def copy_of(s: Session, me: str, entry: Owned, blobs: dict[str, bytes], version: int) -> Copy:
    return Copy(
        s.app, s.token, me, entry.epoch, version, blobs, s.created_at, s.last_access_at,
        s.timeout_s, s.owner, s.version, s.absolute_expires_at,
    )  # fmt: skip


def meta_of(s: Session) -> Meta:
    return (s.timeout_s, s.absolute_expires_at, s.owner)


def delta_of(s: Session, me: str, entry: Owned, blobs: dict[str, bytes], version: int) -> Delta:
    changed, removed = changes(entry.blobs, blobs)
    return Delta(
        s.app, s.token, me, entry.epoch, entry.version, version, changed, removed,
        s.last_access_at, s.timeout_s, s.absolute_expires_at, s.owner,
    )  # fmt: skip
