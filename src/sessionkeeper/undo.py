"""The per-request part of a ``Session``: each request's undo log (what it set or deleted, and
copies of the mutable values it read, so a failed request can be rolled back) and which requests
accessed the session (``Vary: Cookie``). A base class of ``Session``, whose lock guards it all.
"""

from __future__ import annotations

import copy
import threading
from contextvars import ContextVar
from typing import Any

from .changes import Changes

_MISSING: Any = object()

#: The request (an opaque int) the current thread or task is serving, for the per-request undo log.
current_request: ContextVar[int | None] = ContextVar("sessionkeeper_request", default=None)


class RequestLog(dict[str, Any]):
    """Per-request state of a session dict. ``Session`` defines the slots; this class only
    declares them for the type checker."""

    __slots__ = ()

    _lock: threading.RLock
    changes: Changes
    version: int
    _undo: dict[int, dict[str, tuple[Any, bool, bool]]]
    _undo_version: dict[int, int]
    _read_copies: dict[int, dict[str, tuple[Any, Any]]] | None
    _accessed: set[int] | None

    def _touch(self) -> None:
        rid = current_request.get()
        if rid is None or (self._accessed is not None and rid in self._accessed):
            return
        with self._lock:
            if self._accessed is None:
                self._accessed = {rid}
            else:
                self._accessed.add(rid)

    def accessed_in(self, rid: int) -> bool:
        """Whether request ``rid`` read, iterated or changed this session (``Vary: Cookie``)."""
        accessed = self._accessed
        return accessed is not None and rid in accessed

    def _record_undo(self, key: str, old: Any) -> None:
        rid = current_request.get()
        if rid is None:
            return
        log = self._undo.get(rid)
        if log is not None and key not in log:
            log[key] = (old, *self.changes.key_state(key))

    def _copy_on_read(self, key: str, value: Any) -> None:
        """Keep a copy of a mutable value the current request reads first, before any change of
        it (the undo log then has the value itself)."""
        rid = current_request.get()
        if rid is None or rid not in self._undo:
            return
        with self._lock:
            if key in self._undo[rid]:
                return
            if self._read_copies is None:
                self._read_copies = {}
            copies = self._read_copies.setdefault(rid, {})
            if key not in copies:
                try:
                    copies[key] = (value, copy.deepcopy(value))
                except Exception:  # a value that cannot be copied cannot be rolled back either
                    copies[key] = (value, value)

    def _mutated_in(self, rid: int) -> list[tuple[str, Any]]:
        """The keys request ``rid`` read and then mutated in place (not set or deleted), each
        with its value as read. Caller holds the lock."""
        copies = self._read_copies.get(rid) if self._read_copies else None
        if not copies:
            return []
        log = self._undo.get(rid, {})
        return [
            (key, before)
            for key, (value, before) in copies.items()
            if key not in log and dict.get(self, key, _MISSING) is value and value != before
        ]

    def changed_in(self, rid: int) -> bool:
        """Whether request ``rid`` set, deleted or mutated in place a key it could still roll
        back."""
        with self._lock:
            return bool(self._undo.get(rid)) or bool(self._mutated_in(rid))

    def begin_undo(self, rid: int) -> None:
        with self._lock:
            self._undo[rid] = {}
            self._undo_version[rid] = self.version

    def end_undo(self, rid: int, *, revert: bool) -> bool:
        """Forget (or, with ``revert``, roll back) what request ``rid`` changed. Returns whether
        anything was rolled back. When nothing was written during the request, rolled-back keys
        get their change tracking back as it was, so the rollback itself writes nothing; when
        something was (``sync()``, an immediate policy), they stay marked changed, so a later
        write restores the stored value."""
        with self._lock:
            if self._accessed is not None:
                self._accessed.discard(rid)
                if not self._accessed:
                    self._accessed = None
            mutated = self._mutated_in(rid) if revert else []
            if self._read_copies is not None:
                self._read_copies.pop(rid, None)
                if not self._read_copies:
                    self._read_copies = None
            log = self._undo.pop(rid, None)
            written = self._undo_version.pop(rid, self.version) != self.version
            for key, before in mutated:
                dict.__setitem__(self, key, before)
                if written:  # the store has the mutated value: write the restored one
                    self.changes.put_key_state(key, True, False)
            if not revert or not log:
                return bool(mutated)
            for key, (old, was_set, was_deleted) in log.items():
                if old is _MISSING:
                    dict.pop(self, key, None)
                else:
                    dict.__setitem__(self, key, old)
                if written:
                    was_set, was_deleted = old is not _MISSING, old is _MISSING
                self.changes.put_key_state(key, was_set, was_deleted)
            return True
