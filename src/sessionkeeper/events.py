"""Session and attribute events, and the hooks a stored value may define.

Listeners are called synchronously, in the thread that caused the event, in the order they were
added. A listener that raises is logged and skipped: one broken listener does not fail requests.

Values may define any of these methods (as Java's ``HttpSessionBindingListener`` and
``HttpSessionActivationListener``); each is called with ``(session, key)`` or ``(session,)``:

* ``value_bound(session, key)``: after the value is set in a session.
* ``value_unbound(session, key)``: after it is replaced, removed, or its session is destroyed.
* ``session_will_passivate(session)``: before its session leaves this process's memory (evicted).
* ``session_did_activate(session)``: after its session is loaded from the store.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger("sessionkeeper.events")


class DestroyReason(enum.Enum):
    INVALIDATED = "invalidated"
    TIMED_OUT = "timed_out"


@dataclass(frozen=True, slots=True)
class SessionEvent:
    app: str
    token: str
    #: The session object when this node holds it; ``None`` for a session swept from the store
    #: that this node never cached.
    session: Session | None = None
    reason: DestroyReason | None = None


@dataclass(frozen=True, slots=True)
class AttributeEvent:
    session: Session
    key: str
    value: Any
    old_value: Any = None


class SessionListener:
    """Subclass and override what you need; add with ``manager.add_listener``."""

    def session_created(self, event: SessionEvent) -> None:
        """A new session was created (at its first write)."""

    def session_destroyed(self, event: SessionEvent) -> None:
        """A session was invalidated, or timed out and was swept. Fired once across all nodes
        for a timeout: by the node whose sweep deleted it."""

    def attribute_added(self, event: AttributeEvent) -> None: ...

    def attribute_replaced(self, event: AttributeEvent) -> None: ...

    def attribute_removed(self, event: AttributeEvent) -> None: ...


class EventBus:
    def __init__(self) -> None:
        self._listeners: tuple[SessionListener, ...] = ()

    def add(self, listener: SessionListener) -> None:
        self._listeners = (*self._listeners, listener)

    def remove(self, listener: SessionListener) -> None:
        self._listeners = tuple(x for x in self._listeners if x is not listener)

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def emit(self, method: str, event: SessionEvent | AttributeEvent) -> None:
        for listener in self._listeners:
            try:
                getattr(listener, method)(event)
            except Exception:
                log.exception("session listener %r failed in %s", listener, method)


#: Exact types that cannot define a hook (subclasses can, and are looked up).
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None), bytes, list, dict, tuple, set})


def call_hook(value: Any, hook: str, *args: Any) -> None:
    """Call ``value.<hook>(*args)`` if the value defines it; log, never raise."""
    if type(value) in _PLAIN_TYPES:
        return  # most values: skip the failing attribute lookup on every set
    fn = getattr(value, hook, None)
    if fn is None or not callable(fn):
        return
    try:
        fn(*args)
    except Exception:
        log.exception("%s of %r failed", hook, type(value).__name__)
