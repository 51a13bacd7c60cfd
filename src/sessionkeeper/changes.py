"""What a ``Session`` changed since its last successful store write: its change tracking.

A ``Changes`` *is* its session's lock: an ``RLock`` (so callers that already hold it may call
in), one object where a lock and a tracking object were two (40 bytes less per cached session).
Every method takes it. That includes recording a read: a read added without it could land in a
set the writer has just taken, and be lost for the next write (``contents="accessed"`` writes
read keys).

A write ``take()``s a snapshot and leaves the tracking empty; a failed write ``restore()``s it,
merged under what changed meanwhile (a key set after the take stays set, one deleted after the
take stays deleted).

The key sets are allocated when first needed (most cached sessions have nothing unwritten), and
a few keys are kept in a tuple, not a set: an empty set costs 216 bytes and one of five keys 728,
a tuple of five 80. From ``_SMALL`` keys on, a set (membership stays O(1)). The views and
``take()`` give sets.

The tuples are shared between sessions (:func:`_shared`): an app's sessions set and read the same
few attribute names, so the 100,000 sessions of one app hold a handful of tuples, not one each.
A tuple is immutable, so sharing one changes nothing a session sees.
"""

from __future__ import annotations

import _thread
from collections.abc import Iterable, Set
from typing import ClassVar

_EMPTY: frozenset[str] = frozenset()
_SMALL = 8
#: Key tuples in use, each the one shared copy of itself. Bounded: when full it starts over (the
#: tuples sessions hold stay alive in them; only later ones stop sharing with those).
_SHARED: dict[tuple[str, ...], tuple[str, ...]] = {}
_SHARED_MAX = 4096

#: A key collection: ``None`` (empty), a tuple of fewer than ``_SMALL`` distinct keys, or a set.
Keys = tuple[str, ...] | set[str] | None


def _shared(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The shared copy of ``keys`` (atomic dict operations: no lock needed)."""
    got = _SHARED.get(keys)
    if got is None:
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        got = _SHARED.setdefault(keys, keys)
    return got


def _with(keys: Keys, key: str) -> Keys:
    if keys is None:
        return _shared((key,))
    if isinstance(keys, tuple):
        if key in keys:
            return keys
        if len(keys) < _SMALL - 1:
            return _shared((*keys, key))
        keys = set(keys)
    keys.add(key)
    return keys


def _without(keys: Keys, key: str) -> Keys:
    if keys is None or key not in keys:
        return keys
    if isinstance(keys, tuple):
        rest = tuple(k for k in keys if k != key)
        return _shared(rest) if rest else None
    keys.discard(key)
    return keys or None


def _view(keys: Keys) -> frozenset[str] | set[str]:
    if keys is None:
        return _EMPTY
    return frozenset(keys) if isinstance(keys, tuple) else keys


class Taken:
    """The tracking taken out of a session for one write. It owns the sets it holds (the
    session starts new ones), so they never change after the take; treat them as read-only."""

    __slots__ = ("deleted_keys", "meta_changed", "read_keys", "requests", "set_keys", "updates")

    def __init__(
        self,
        set_keys: Set[str],
        deleted_keys: Set[str],
        read_keys: Set[str],
        meta_changed: bool,
        updates: int,
        requests: int,
    ) -> None:
        self.set_keys = set_keys
        self.deleted_keys = deleted_keys
        self.read_keys = read_keys
        self.meta_changed = meta_changed
        self.updates = updates
        self.requests = requests


# typeshed marks ``_thread.RLock`` final; CPython's type is subclassable (Py_TPFLAGS_BASETYPE).
class Changes(_thread.RLock):  # type: ignore[misc]
    """One session's change tracking, and the session's lock (``with changes:``). The ``Session``
    records into it; the writer takes it out for a write and restores it when the write fails."""

    __slots__ = (
        "_deleted",
        "_read",
        "_set",
        "meta_changed",
        "requests",
        "updates",
    )

    #: ``contents="accessed"``: a read key may have changed. Fixed per manager, so a class
    #: attribute (:class:`ReadChanges`), not a slot: 16 bytes per session with the allocator's
    #: rounding.
    track_reads: ClassVar[bool] = False

    def __new__(cls, *, track_reads: bool = False) -> Changes:
        return _thread.RLock.__new__(ReadChanges if track_reads else cls)

    def __init__(self, *, track_reads: bool = False) -> None:
        self._set: Keys = None
        self._deleted: Keys = None
        self._read: Keys = None
        self.meta_changed = False  # owner or timeout changed
        self.updates = 0  # sets and deletes since the last write
        self.requests = 0  # requests ended since the last write

    # -- views (read-only; callers hold the lock to get a consistent picture) --------------------

    # set_keys and deleted_keys are read by every write: _view, inline.

    @property
    def set_keys(self) -> frozenset[str] | set[str]:
        keys = self._set
        return _EMPTY if keys is None else frozenset(keys) if isinstance(keys, tuple) else keys

    @property
    def deleted_keys(self) -> frozenset[str] | set[str]:
        keys = self._deleted
        return _EMPTY if keys is None else frozenset(keys) if isinstance(keys, tuple) else keys

    @property
    def read_keys(self) -> frozenset[str] | set[str]:
        return _view(self._read)

    def any(self) -> bool:
        """Anything the next write would carry. With ``track_reads`` a read key counts: it may
        have been mutated in place, which only its bytes can tell."""
        return bool(
            self._set or self._deleted or self.meta_changed or (self.track_reads and self._read)
        )

    # -- recording -------------------------------------------------------------------------------

    def record_set(self, key: str) -> None:
        with self:
            keys = self._set
            if keys is None or key not in keys:  # a key set again: nothing to add
                self._set = _with(keys, key)
            if self._deleted is not None:
                self._deleted = _without(self._deleted, key)
            self.updates += 1

    def record_delete(self, key: str) -> None:
        with self:
            self._deleted = _with(self._deleted, key)
            self._set = _without(self._set, key)
            self.updates += 1

    def record_read(self, key: str) -> None:
        read = self._read
        if read is not None and key in read:
            return  # nothing to add (reading the collection needs no lock: a tuple is only
            # replaced, a set only added to under it). Session's [] and get check this inline.
        with self:
            self._read = _with(self._read, key)

    def record_meta(self) -> None:
        with self:
            self.meta_changed = True

    def record_request(self) -> None:
        with self:
            self.requests += 1

    def reads_as_set(self, present: Iterable[str]) -> bool:
        """Mark every read key among ``present`` as set (``mark_modified``); counts one update
        when any was not set already."""
        with self:
            keys = (self.read_keys & set(present)) - self.set_keys
            if not keys:
                return False
            for key in keys:
                self._mark(key, set_=True, deleted=False)
            self.updates += 1
            return True

    def key_state(self, key: str) -> tuple[bool, bool]:
        """``(set, deleted)`` of ``key``, for a request's undo log. Caller holds the lock."""
        return key in (self._set or ()), key in (self._deleted or ())

    def put_key_state(self, key: str, set_: bool, deleted: bool) -> None:
        """Give ``key`` back a state from :meth:`key_state` (a rolled-back request)."""
        with self:
            self._mark(key, set_=set_, deleted=deleted)

    def _mark(self, key: str, *, set_: bool, deleted: bool) -> None:
        self._set = _with(self._set, key) if set_ else _without(self._set, key)
        self._deleted = _with(self._deleted, key) if deleted else _without(self._deleted, key)

    # -- for the writer --------------------------------------------------------------------------

    def take(self) -> Taken:
        """Swap out everything recorded for one write; the tracking is empty afterwards."""
        with self:
            taken = Taken(
                _view(self._set),
                _view(self._deleted),
                _view(self._read),
                self.meta_changed,
                self.updates,
                self.requests,
            )
            self._set = self._deleted = self._read = None
            self.meta_changed = False
            self.updates = self.requests = 0
            return taken

    def restore(self, t: Taken) -> None:
        """Put back what a failed write took, without overriding what changed since: a key set
        (or deleted) after the take keeps its newer state."""
        with self:
            for key in t.set_keys - self.deleted_keys:
                self._mark(key, set_=True, deleted=False)
            for key in t.deleted_keys - self.set_keys:
                self._mark(key, set_=False, deleted=True)
            for key in t.read_keys:
                self._read = _with(self._read, key)
            self.meta_changed = self.meta_changed or t.meta_changed
            self.updates += t.updates
            self.requests += t.requests

    def forget_reads(self) -> None:
        """Reads were compared with the stored bytes and found unchanged."""
        with self:
            self._read = None

    def forget_keys(self) -> None:
        """Set, deleted and read keys no longer matter (the data was replaced from the store)."""
        with self:
            self._set = self._deleted = self._read = None

    def clear(self) -> None:
        with self:
            self._set = self._deleted = self._read = None
            self.meta_changed = False
            self.updates = self.requests = 0


class ReadChanges(Changes):  # type: ignore[misc]  # (RLock's finality, as above)
    """The tracking of a session under ``contents="accessed"``: ``Changes(track_reads=True)``."""

    __slots__ = ()
    track_reads = True
