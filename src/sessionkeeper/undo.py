"""The per-request part of a ``Session``: each request's undo log (what it set or deleted, and
copies of the mutable values it read, so a failed request can be rolled back) and whether it
accessed the session (``Vary: Cookie``). A base class of ``Session``, whose lock guards it all.

It all lives in one :class:`Request` record per request in progress, made by ``begin_undo`` and
dropped by ``end_undo``; a session no request is using holds none (``_undo`` is ``None``).
"""

from __future__ import annotations

import copy
from contextvars import ContextVar
from typing import Any

from .changes import Changes

_MISSING: Any = object()

#: The request (an opaque int) the current thread or task is serving, for the per-request undo log.
current_request: ContextVar[int | None] = ContextVar("sessionkeeper_request", default=None)


class Request:
    """One request's state on one session: the store version it started at, each key's value
    and change tracking before the request first changed it (``log``), copies of the mutable
    values it read before changing them (``copies``: value as read, copy), made on demand, and
    whether it read, iterated or changed the session (``accessed``)."""

    __slots__ = ("accessed", "copies", "log", "version")

    def __init__(self, version: int) -> None:
        self.version = version
        self.log: dict[str, tuple[Any, bool, bool]] | None = None
        self.copies: dict[str, tuple[Any, Any]] | None = None
        self.accessed = False


class RequestLog(dict[str, Any]):
    """Per-request state of a session dict. ``Session`` defines the slots; this class only
    declares them for the type checker."""

    __slots__ = ()

    changes: Changes  # also the session's lock
    version: int
    _undo: dict[int, Request] | None  # by ``current_request`` number; None: no request in progress

    def _request(self) -> Request | None:
        undo = self._undo
        return None if undo is None else undo.get(current_request.get())  # type: ignore[arg-type]

    def _touch(self) -> None:
        # Only the request's own record changes (a flag): no lock, no allocation.
        undo = self._undo
        if undo is not None:
            req = undo.get(current_request.get())  # type: ignore[arg-type]
            if req is not None:
                req.accessed = True

    def accessed_in(self, rid: int) -> bool:
        """Whether request ``rid`` read, iterated or changed this session (``Vary: Cookie``)."""
        undo = self._undo
        req = None if undo is None else undo.get(rid)
        return req is not None and req.accessed

    def _record_undo(self, key: str, old: Any) -> None:
        """Log ``key``'s value and tracking before the current request first changes it, and
        mark the session accessed by the request, as :meth:`_touch`. Caller holds the lock."""
        undo = self._undo
        req = None if undo is None else undo.get(current_request.get())  # type: ignore[arg-type]
        if req is None:
            return
        req.accessed = True
        if req.log is None:
            req.log = {}
        if key not in req.log:
            req.log[key] = (old, *self.changes.key_state(key))

    def _copy_on_read(self, key: str, value: Any) -> None:
        """Keep a copy of a mutable value the current request reads first, before any change of
        it (the undo log then has the value itself)."""
        req = self._request()
        if req is None:
            return
        with self.changes:
            if req.log is not None and key in req.log:
                return
            if req.copies is None:
                req.copies = {}
            if key not in req.copies:
                try:
                    req.copies[key] = (value, copy.deepcopy(value))
                except Exception:  # a value that cannot be copied cannot be rolled back either
                    req.copies[key] = (value, value)

    def _mutated_in(self, req: Request) -> list[tuple[str, Any]]:
        """The keys the request read and then mutated in place (not set or deleted), each with
        its value as read. Caller holds the lock."""
        if not req.copies:
            return []
        log = req.log or {}
        return [
            (key, before)
            for key, (value, before) in req.copies.items()
            if key not in log and dict.get(self, key, _MISSING) is value and value != before
        ]

    def changed_in(self, rid: int) -> bool:
        """Whether request ``rid`` set, deleted or mutated in place a key it could still roll
        back."""
        with self.changes:
            req = None if self._undo is None else self._undo.get(rid)
            return req is not None and (bool(req.log) or bool(self._mutated_in(req)))

    def begin_undo(self, rid: int) -> None:
        """Start request ``rid``'s record. Caller holds the lock."""
        undo = self._undo
        if undo is None:
            self._undo = {rid: Request(self.version)}
        else:
            undo[rid] = Request(self.version)

    def end_undo(self, rid: int, *, revert: bool) -> bool:
        """Forget (or, with ``revert``, roll back) what request ``rid`` changed. Returns whether
        anything was rolled back. When nothing was written during the request, rolled-back keys
        get their change tracking back as it was, so the rollback itself writes nothing; when
        something was (``sync()``, an immediate policy), they stay marked changed, so a later
        write restores the stored value."""
        with self.changes:
            undo = self._undo
            req = None if undo is None else undo.pop(rid, None)
            if undo is not None and not undo:
                self._undo = None
            if req is None or not revert:  # kept: nothing to roll back (every good request)
                return False
            mutated = self._mutated_in(req)
            written = req.version != self.version
            for key, before in mutated:
                dict.__setitem__(self, key, before)
                if written:  # the store has the mutated value: write the restored one
                    self.changes.put_key_state(key, True, False)
            if not req.log:
                return bool(mutated)
            for key, (old, was_set, was_deleted) in req.log.items():
                if old is _MISSING:
                    dict.pop(self, key, None)
                else:
                    dict.__setitem__(self, key, old)
                if written:
                    was_set, was_deleted = old is not _MISSING, old is _MISSING
                self.changes.put_key_state(key, was_set, was_deleted)
            return True

    def _forget_undo(self) -> None:
        """The data was replaced (a new session under a new id): requests in progress keep their
        records (their version, whether they accessed) but have nothing left to roll back.
        Caller holds the lock."""
        for req in (self._undo or {}).values():
            req.log = req.copies = None
