"""``Session``: a mapping of attribute names to values, plus metadata and change tracking.

Thread safety: each set and delete is atomic (a per-session lock). Concurrent requests of one session
in one process share one ``Session`` object. With ``serialize_access`` the manager also holds the
session's access lock for a whole request, so read-modify-write sequences do not interleave.

The session never does I/O itself: writes, invalidation and id rotation are delegated to its host
(the manager) through the :class:`SessionHost` protocol.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Protocol

from . import offloop
from .changes import Changes
from .logs import session_hash
from .mutators import DictMethods
from .undo import _MISSING as _MISSING
from .undo import Request
from .undo import current_request as current_request

#: Values a request cannot change in place: reading one needs no copy for the undo log.
_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes})
#: ``stored_hashes`` of every session with nothing stored yet; never changed (replaced first).
_NO_HASHES: dict[str, int] = {}


class SessionHost(Protocol):
    @property
    def _node(self) -> str: ...

    def _suffix(self, session: Session) -> str: ...

    def _validate_value(self, session: Session, key: str, value: Any) -> None: ...

    def _attribute_changed(self, session: Session, key: str, old: Any, new: Any) -> None: ...

    def _metadata_changed(self, session: Session) -> None: ...

    def _sync(self, session: Session) -> None: ...

    def _invalidate(self, session: Session) -> None: ...

    def _rotate_id(self, session: Session) -> None: ...

    def _now(self) -> float: ...


class Session(DictMethods):
    """One session: a ``dict`` of attribute names to values (``json.dumps(session)`` and
    ``isinstance(session, dict)`` work), plus metadata and change tracking. Attribute names are
    ``str``; values must be serializable by the manager's serializer (checked when set: a bad
    value raises :class:`SerializationError` naming the key, and nothing changes).

    dict's C methods do not go through ``__setitem__``, so every mutator is overridden (here and
    in :mod:`.mutators`) and goes through ``__setitem__`` / ``__delitem__`` (tracked, validated,
    undo-logged). Reads through ``[]``, ``get``, ``items``, ``values``, ``copy`` and ``|`` are
    tracked; ``in``, ``len``, ``keys`` and ``==`` are not (they read no value). ``copy()`` and
    ``|`` return plain dicts."""

    # No instance __dict__: with more than 30 attributes CPython gives every instance a full
    # dict of its own (no key sharing), about 1.6 KB per cached session.
    __slots__ = (
        "_access_lock",
        "_host",
        "_owner",
        "_undo",
        "_write_lock",
        "absolute_expires_at",
        "active_requests",
        "app",
        "changes",
        "created",
        "created_at",
        "created_by",
        "in_store",
        "last_access_at",
        "last_store_access_at",
        "last_write_at",
        "stored_hashes",
        "timeout_s",
        "token",
        "version",
    )

    def __init__(
        self,
        host: SessionHost,
        app: str,
        token: str,
        *,
        created_at: float,
        timeout_s: float,
        last_access_at: float | None = None,
        version: int = 0,
        owner: str | None = None,
        data: dict[str, Any] | None = None,
        track_reads: bool = False,
        absolute_expires_at: float | None = None,
    ) -> None:
        self._host = host
        self.app = app
        self.token = token
        self.created_at = created_at
        self.last_access_at = created_at if last_access_at is None else last_access_at
        self.timeout_s = timeout_s
        # Wall time after which the session is over however often it is used; ``None``: none.
        self.absolute_expires_at = absolute_expires_at
        self.version = version  # the store version this copy was read at or last wrote
        self._owner = owner
        if data:
            dict.update(self, data)
        # What changed since the last successful store write; also the session's lock (one
        # object: see changes.py), taken by every set and delete.
        self.changes = Changes(track_reads=track_reads)
        # Made when first used (most cached sessions are never written twice at once, and
        # without serialize_access the access lock is never used): see the properties.
        self._access_lock: threading.Lock | None = None
        self._write_lock: threading.Lock | None = None
        # When data last reached the store: a *monotonic* reading of the manager's clock (an
        # interval is measured from it), which the manager layer sets; never a timestamp.
        self.last_write_at = 0.0
        self.last_store_access_at = self.last_access_at  # access time the store has
        # Each key's stored bytes, hashed (not "updated"). A session never loaded or written
        # shares one empty dict; the writer and the loader give it its own.
        self.stored_hashes: dict[str, int] = _NO_HASHES
        # -- lifecycle --
        self.in_store = version > 0  # written at least once
        self.created = version > 0  # has become a real session (first write or loaded)
        # The request (its ``current_request`` number) that created this session, if one did:
        # only that request's hold is new. Per-request state lives on the hold, not here; this
        # is cleared when the last request lets go (its hold keeps the answer: ``new_at_end``).
        self.created_by: int | None = None
        self.active_requests = 0
        # Per request in progress (by ``current_request`` number): its undo log, copies of the
        # mutable values it read (so that a failed request can undo an in-place mutation too,
        # ``s["cart"].append(x)``) and whether it accessed the session (``Vary: Cookie``).
        # ``None`` while no request is using the session.
        self._undo: dict[int, Request] | None = None

    # -- identity ---------------------------------------------------------------------------

    @property
    def access_lock(self) -> threading.Lock:
        """Held for a whole request with ``serialize_access``."""
        lock = self._access_lock
        if lock is None:
            with self.changes:  # two threads asking at once must get one lock
                lock = self._access_lock
                if lock is None:
                    lock = self._access_lock = threading.Lock()
        return lock

    @property
    def write_lock(self) -> threading.Lock:
        """Held for each store write of this session: one at a time."""
        lock = self._write_lock
        if lock is None:
            with self.changes:
                lock = self._write_lock
                if lock is None:
                    lock = self._write_lock = threading.Lock()
        return lock

    @property
    def id(self) -> str:
        """``<token>.<node>`` (``<token>.<owner>.<backup>`` with replication): the value for the
        cookie, naming the node that serves it now."""
        return f"{self.token}.{self._host._suffix(self)}"

    @property
    def owner(self) -> str | None:
        return self._owner

    @owner.setter
    def owner(self, principal: str | None) -> None:
        """Bind the session to a principal (at login). A request presenting it under another
        principal then gets a new session instead."""
        with self.changes:
            self._owner = principal
            self.changes.record_meta()
        self._host._metadata_changed(self)

    def set_timeout(self, timeout_s: float) -> None:
        """Give this session its own idle timeout (Django's ``set_expiry(seconds)``, Flask's
        permanent sessions). Written with the session's next write."""
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        with self.changes:
            if self.timeout_s == timeout_s:
                return
            self.timeout_s = float(timeout_s)
            self.changes.record_meta()
        self._host._metadata_changed(self)

    def set_absolute_expiry(self, when: float | None) -> None:
        """End this session at wall time ``when`` however often it is used (Django's
        ``set_expiry(datetime)``); ``None`` removes the deadline. Written with the session's
        next write. A time not in the future ends the session now, as :meth:`invalidate`."""
        if when is not None and when <= self._host._now():
            self.invalidate()
            return
        self.record_deadline(when)

    def record_deadline(self, when: float | None) -> None:
        """Set the deadline, to be written, even one already past: the session then ends at its
        next load, not now (Starlette's ``max_age`` of 0 still sends the cookie)."""
        with self.changes:
            if self.absolute_expires_at == when:
                return
            self.absolute_expires_at = None if when is None else float(when)
            self.changes.record_meta()
        self._host._metadata_changed(self)

    def mark_modified(self) -> None:
        """Treat every key read since the last write as changed, so values mutated in place are
        written under ``contents="updated"`` too (Flask's and Django's ``session.modified = True``)."""
        with self.changes:
            self.changes.reads_as_set(dict.keys(self))

    @property
    def in_use(self) -> bool:
        return self.active_requests > 0

    @property
    def expires_at(self) -> float:
        """Idle expiry or the absolute deadline, whichever comes first."""
        idle = self.last_access_at + self.timeout_s
        deadline = self.absolute_expires_at
        return idle if deadline is None else min(idle, deadline)

    def expired(self, now: float) -> bool:
        deadline = self.absolute_expires_at
        return now - self.last_access_at > self.timeout_s or (
            deadline is not None and now >= deadline
        )

    # -- mapping ----------------------------------------------------------------------------

    # ``[]``, ``get`` and ``[]=`` are every request's path: the request's record is looked up
    # inline (what ``_touch`` does), and a key already read is not recorded again.

    def __getitem__(self, key: str) -> Any:
        undo = self._undo
        req = None if undo is None else undo.get(current_request.get())  # type: ignore[arg-type]
        if req is not None:
            req.accessed = True
        value = dict.__getitem__(self, key)
        read = self.changes._read  # record_read's own first test, without the call
        if read is None or key not in read:
            self.changes.record_read(key)
        if req is not None and type(value) not in _IMMUTABLE:
            self._copy_on_read(key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """As ``dict.get``, tracked as a read when present (the frameworks look up
        ``_permanent``, ``_session_expiry``... on every request)."""
        undo = self._undo
        req = None if undo is None else undo.get(current_request.get())  # type: ignore[arg-type]
        if req is not None:
            req.accessed = True
        value = dict.get(self, key, _MISSING)
        if value is _MISSING:
            return default
        read = self.changes._read  # record_read's own first test, without the call
        if read is None or key not in read:
            self.changes.record_read(key)
        if req is not None and type(value) not in _IMMUTABLE:
            self._copy_on_read(key, value)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"session attribute names are str, not {type(key).__name__}")
        self._host._validate_value(self, key, value)
        with self.changes:
            old = dict.get(self, key, _MISSING)
            self._record_undo(key, old)  # and marks the session accessed (_touch)
            dict.__setitem__(self, key, value)
            self.changes.record_set(key)
        self._host._attribute_changed(self, key, old, value)

    def __delitem__(self, key: str) -> None:
        self._touch()
        with self.changes:
            old = dict.pop(self, key)  # KeyError when absent, as a dict
            self._record_undo(key, old)
            self.changes.record_delete(key)
        self._host._attribute_changed(self, key, old, _MISSING)

    def __iter__(self) -> Iterator[str]:
        # A snapshot: concurrent requests of a session share this object, and another thread's
        # set or delete must not break this one's loop ("dictionary changed size").
        self._touch()
        return iter(list(dict.keys(self)))

    def __repr__(self) -> str:
        # Never any part of the id (a bearer credential): its short hash, as the logs give it.
        return f"<Session {self.app}:{session_hash(self.app, self.token)} keys={sorted(dict.keys(self))!r}>"

    # -- operations that reach the store ----------------------------------------------------

    def sync(self) -> None:
        """Write this session to the store now, under every write policy."""
        self._host._sync(self)

    def invalidate(self) -> None:
        """End this session: delete it from the store (leaving a tombstone) and fire the destroyed
        event. This object then becomes a new, empty session with a new id, created only if
        something is written to it, so code that goes on using it after a logout is safe."""
        self._host._invalidate(self)

    def rotate_id(self) -> None:
        """Give the session a new id, keeping its data (call it at login, against fixation).
        The old id is tombstoned; the cookie is rewritten."""
        self._host._rotate_id(self)

    # The awaitable forms, for async endpoints: the whole operation in a worker thread.

    async def async_sync(self) -> None:
        """``sync()`` off the event loop; its errors are raised here."""
        await offloop.run(self.sync)

    async def ainvalidate(self) -> None:
        """``invalidate()`` off the event loop; its errors are raised here."""
        await offloop.run(self.invalidate)

    async def arotate_id(self) -> None:
        """``rotate_id()`` off the event loop; its errors are raised here."""
        await offloop.run(self.rotate_id)

    # -- used by the manager ----------------------------------------------------------------

    @property
    def lock(self) -> threading.RLock:
        return self.changes

    def own_hashes(self) -> dict[str, int]:
        """``stored_hashes``, to be changed: this session's own dict (the shared empty one is
        replaced first). Caller holds ``lock``."""
        if self.stored_hashes is _NO_HASHES:
            self.stored_hashes = {}
        return self.stored_hashes

    def has_changes(self) -> bool:
        """Anything the next write would carry (see :meth:`Changes.any`)."""
        return self.changes.any()

    # What the policies and stats read (policies.Tracked); changes go through ``changes``.
    @property
    def updates_since_write(self) -> int:
        return self.changes.updates

    @property
    def requests_since_write(self) -> int:
        return self.changes.requests

    @property
    def meta_changed(self) -> bool:
        return self.changes.meta_changed

    @property
    def set_keys(self) -> frozenset[str]:
        return frozenset(self.changes.set_keys)

    @property
    def deleted_keys(self) -> frozenset[str]:
        return frozenset(self.changes.deleted_keys)

    @property
    def read_keys(self) -> frozenset[str]:
        return frozenset(self.changes.read_keys)

    @property
    def unwritten(self) -> bool:
        """A real session whose store copy is behind: changed since its last write, or never
        written at all."""
        return self.created and (self.has_changes() or not self.in_store)

    def reset_as_new(self, token: str, now: float) -> dict[str, Any]:
        """Become a new, empty, not yet created session under ``token`` (after an invalidation);
        returns the attributes it had. Requests still holding this object keep working."""
        with self.changes:
            values = dict.copy(self)
            dict.clear(self)
            self.token = token
            self.version = 0
            self.in_store = self.created = False
            self.created_by = None
            self.changes.clear()
            self.stored_hashes = _NO_HASHES
            self.created_at = self.last_access_at = now
            self.absolute_expires_at = None  # the new session's own, set when it is created
            self.last_store_access_at = now
            self._forget_undo()
            return values
