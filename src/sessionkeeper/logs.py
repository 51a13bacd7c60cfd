"""What every library log record carries besides its message: the session's short hash, the
node and the error's stable code, as the record attributes ``sk_session``, ``sk_node`` and
``sk_code`` that ``deploy/logging.json``'s format names.

A session id is a bearer credential, so no log line names any part of one: call sites pass
:func:`session_hash` (the same hash the admin console shows) in the message and as
``extra=fields(app, token)``. :class:`RecordFields` is a *handler* filter (a logger's filter
would not see its children's records) that fills the attributes a record lacks, so records of
other loggers (gunicorn's, uvicorn's) format too: ``-`` for a missing session, the node of the
manager at work (:func:`acting_node`) or of those built in this process, and the code of an
exception among the record's args or in its ``exc_info``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import weakref
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: What a record shows for a field it does not have.
NONE = "-"


class _Named(Protocol):
    @property
    def node(self) -> str: ...


# Weak references by id (a dataclass runtime is not hashable), so logging keeps no manager
# alive. The lock guards the dict against a manager being built while another thread logs.
_nodes: dict[int, weakref.ref[Any]] = {}
_lock = threading.Lock()
# The key in ``_nodes`` of the only registered object while there is exactly one, else None.
_sole: int | None = None


def session_hash(app: str, token: str) -> str:
    """12 hex digits of a SHA-256 of app and token: names a session without being its id. The
    admin console's pages, URLs and audit log use the same function."""
    return hashlib.sha256(f"{app}\x00{token}".encode()).hexdigest()[:12]


def fields(app: str, token: str, code: str | None = None) -> dict[str, str]:
    """The ``extra=`` of a log call about one session (and, given, the error's code)."""
    out = {"sk_session": session_hash(app, token)}
    if code:
        out["sk_code"] = code
    return out


# The node of the manager whose method is running in this thread or task (see acting_node).
_acting: ContextVar[str | None] = ContextVar("sessionkeeper_acting_node", default=None)


def acting_node(method: Callable[Concatenate[T, P], R]) -> Callable[Concatenate[T, P], R]:
    """Decorates a method of an object with a ``_rt`` runtime (or a ``node`` of its own): while
    it runs, records of this thread or task name that node, not every live one (a process may
    run several managers: tests, a console next to an app)."""

    @functools.wraps(method)
    def inner(self: T, /, *args: P.args, **kwargs: P.kwargs) -> R:
        token = act(getattr(self, "_rt", None) or cast(_Named, self))
        try:
            return method(self, *args, **kwargs)
        finally:
            if token is not None:
                _acting.reset(token)

    return inner


def act(named: _Named) -> Token[str | None] | None:
    """What :func:`acting_node` does on entry, for a hot method that does it inline (its
    wrapper costs a cache hit about 1 µs): name ``named``'s node; ``None`` when nothing needed
    naming, else the token to give :func:`unact` on the way out. Nothing needs naming for the
    only live manager (records name it anyway, see :func:`current_node`), nor inside another
    such method of the same node; setting and resetting the context variable cost more."""
    if id(named) == _sole:
        return None
    node = named.node
    if _acting.get() == node:
        return None
    return _acting.set(node)


def unact(token: Token[str | None] | None) -> None:
    if token is not None:
        _acting.reset(token)


def register_node(named: _Named) -> None:
    """Make ``named.node`` (read when a record is formatted: a forked worker renames its node)
    the ``sk_node`` of records that do not give one. Called by each manager's runtime."""
    key = id(named)

    def forget(_: object) -> None:
        with _lock:
            _nodes.pop(key, None)
            _note_sole()

    with _lock:
        _nodes[key] = weakref.ref(named, forget)
        _note_sole()


def _note_sole() -> None:
    """Caller holds ``_lock``. A call already running when a second manager registers goes on
    unnamed: its records name both nodes until it returns."""
    global _sole
    _sole = next(iter(_nodes)) if len(_nodes) == 1 else None


def current_node() -> str:
    """The node of the manager at work in this thread or task (:func:`acting_node`), else that
    of the live managers of this process, comma-joined if they differ, ``-`` when none."""
    acting = _acting.get()
    if acting is not None:
        return acting
    with _lock:
        live = [r() for r in _nodes.values()]
    names = sorted({n.node for n in live if n is not None})
    return ",".join(names) or NONE


def code_of(record: logging.LogRecord) -> str:
    """The stable ``.code`` of the exception a record is about: one of its args, else the
    exception being logged; ``-`` when there is none."""
    args = record.args if isinstance(record.args, tuple) else ()
    candidates = [*args, record.exc_info[1] if record.exc_info else None]
    for value in candidates:
        code = getattr(value, "code", None) if isinstance(value, BaseException) else None
        if isinstance(code, str):
            return code
    return NONE


class RecordFields(logging.Filter):
    """Fills ``sk_session``, ``sk_node`` and ``sk_code`` on every record a handler emits; keeps
    the values a call site gave. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "sk_session"):
            record.sk_session = NONE
        if not hasattr(record, "sk_node"):
            record.sk_node = current_node()
        if not hasattr(record, "sk_code"):
            record.sk_code = code_of(record)
        return True


__all__ = [
    "RecordFields",
    "act",
    "acting_node",
    "code_of",
    "current_node",
    "fields",
    "register_node",
    "session_hash",
    "unact",
]
