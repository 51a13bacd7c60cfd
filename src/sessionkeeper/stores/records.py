"""The values the store contract passes: what a store holds (``StoredSession``), what it is asked
to write (``SaveRequest``, ``Touch``) and what it answers (``SaveResult``, ``ExpiredSession``,
``Invalidation``, ``AppCounts``), with the retry policy and the counters a store keeps. Plain,
frozen data: no I/O. :mod:`.base` re-exports every name.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A session as the store holds it: serialized attributes plus metadata."""

    app: str
    token: str
    attributes: Mapping[str, bytes]
    version: int
    created_at: float
    last_access_at: float
    timeout_s: float
    owner: str | None = None
    node: str | None = None
    #: The absolute deadline (wall time), whatever the accesses: ``None`` for none.
    absolute_expires_at: float | None = None

    @property
    def expires_at(self) -> float:
        """When it expires: idle expiry or the absolute deadline, whichever comes first."""
        return earliest_expiry(self.last_access_at + self.timeout_s, self.absolute_expires_at)

    def expired(self, now: float) -> bool:
        return now - self.last_access_at > self.timeout_s or _past(self.absolute_expires_at, now)


@dataclass(frozen=True, slots=True)
class SaveRequest:
    """Write one session: its metadata, plus ``changed`` and ``removed`` attributes (or, with
    ``full``, the complete attribute set), checked against ``expected_version``."""

    app: str
    token: str
    expected_version: int
    created_at: float
    last_access_at: float
    timeout_s: float
    changed: Mapping[str, bytes] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()
    full: bool = False
    owner: str | None = None
    node: str | None = None
    #: The keys of ``changed`` this node changed (set, or bytes differing from what it last read
    #: or wrote); a full write carries the others along unchanged. ``None``: all of them.
    own: frozenset[str] | None = None
    absolute_expires_at: float | None = None
    #: Whether ``owner`` may differ from the stored one at ``expected_version``; ``False`` lets
    #: a store leave the owner column (and its index) untouched. A rebase sets it again.
    owner_changed: bool = True

    @property
    def expires_at(self) -> float:
        """What sweeps index: idle expiry or the absolute deadline, whichever comes first."""
        return earliest_expiry(self.last_access_at + self.timeout_s, self.absolute_expires_at)

    @property
    def own_changes(self) -> Mapping[str, bytes]:
        """What a rebase re-applies: a carried, unchanged key of a stale copy must not
        overwrite another node's newer value."""
        if self.own is None:
            return self.changed
        return {k: v for k, v in self.changed.items() if k in self.own}


def earliest_expiry(idle: float, absolute: float | None) -> float:
    """What a store indexes for the sweep: the idle expiry, or the deadline if that is earlier."""
    return idle if absolute is None else min(idle, absolute)


def _past(deadline: float | None, now: float) -> bool:
    return deadline is not None and now >= deadline


class SaveStatus(enum.Enum):
    SAVED = "saved"
    CONFLICT = "conflict"  # the stored version moved on; see merged_from
    GONE = "gone"  # invalidated (tombstoned) or deleted meanwhile: must not be brought back
    #: The server began the write after its deadline fence (:mod:`.fence`) and refused it: no
    #: effect at all. Only between a backend and :meth:`.Store.save_many`, which sends the write
    #: again (see there); callers never see it.
    FENCED = "fenced"


#: The members as module constants, for the write path, which compares a status several times
#: per write: on Python 3.11 each ``SaveStatus.SAVED`` is a lookup through the enum's class
#: (about half a microsecond), a module global is not. The same objects: ``is`` holds.
SAVED, CONFLICT, GONE, FENCED = (
    SaveStatus.SAVED,
    SaveStatus.CONFLICT,
    SaveStatus.GONE,
    SaveStatus.FENCED,
)


@dataclass(frozen=True, slots=True)
class SaveResult:
    status: SaveStatus
    version: int = 0  # the stored version after the call
    # Set when the write met another node's newer version. For CONFLICT it is that version; for
    # SAVED it is the state this write was merged on top of (its other keys are still stored).
    merged_from: StoredSession | None = None


@dataclass(frozen=True, slots=True)
class Touch:
    """Access-time-only update: no attribute changed."""

    app: str
    token: str
    last_access_at: float


@dataclass(frozen=True, slots=True)
class ExpiredSession:
    app: str
    token: str
    last_access_at: float
    timeout_s: float
    owner: str | None = None


def tombstone_until(now: float, timeout_s: float, deadline: float | None, grace_s: float) -> float:
    """How long the tombstone of a session ended at ``now`` lasts, and with it the feed's entry:
    as long as a copy of it on some node may still be written back, that is until it would
    have expired (idle, or at its deadline if earlier), plus the sweep's grace; never less than
    the grace from now."""
    ends = now + timeout_s if deadline is None else min(now + timeout_s, deadline)
    return max(now, ends) + grace_s


@dataclass(frozen=True, slots=True)
class Invalidation:
    """One entry of the invalidation feed: this session's id was ended (invalidated, or
    retired by a rotation) on some node."""

    app: str
    token: str


@dataclass(frozen=True, slots=True)
class AppCounts:
    live: int
    expired: int  # expired but not yet swept


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` tries in all; waits ``backoff_s``, doubling up to ``max_backoff_s``."""

    attempts: int = 3
    backoff_s: float = 0.05
    max_backoff_s: float = 1.0


@dataclass
class StoreStats:
    reads: int = 0
    sessions_written: int = 0
    write_batches: int = 0
    touches: int = 0
    deletes: int = 0
    bytes_written: int = 0
    conflicts_merged: int = 0
    #: Writes the server refused by their deadline fence (each then sent again).
    writes_fenced: int = 0
    errors: int = 0
    retries: int = 0
    calls: int = 0
    latency_total_s: float = 0.0
    latency_max_s: float = 0.0
    available: bool = True

    def as_dict(self) -> dict[str, float | int | bool]:
        return dataclasses.asdict(self)


def _rebase(request: SaveRequest, current: StoredSession) -> SaveRequest:
    """Our changed keys re-applied on top of another node's newer version.

    A full write becomes a partial one of only the keys this node changed (``own_changes``):
    keys the other node added or changed are kept, because dropping or overwriting them would
    lose a write we never saw. Keys both changed: ours, the later write, wins.
    """
    return dataclasses.replace(
        request,
        expected_version=current.version,
        full=False,
        changed=request.own_changes,
        own=None,
        owner_changed=True,  # the other node's version may have another owner
        created_at=min(request.created_at, current.created_at),
        last_access_at=max(request.last_access_at, current.last_access_at),
    )
