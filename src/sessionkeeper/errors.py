"""Typed errors. Each carries a stable ``code`` that logs, metrics and scripts can rely on.

Adapters catch these, never a database driver's exceptions.
"""

from __future__ import annotations


class SessionKeeperError(Exception):
    """Base class. ``code`` is stable across releases; the message is for people."""

    code = "sessionkeeper_error"


class ConfigurationError(SessionKeeperError, ValueError):
    """A setting is missing, of the wrong type or out of range."""

    code = "bad_configuration"


class StoreError(SessionKeeperError):
    """The store answered, but with an error that retrying will not fix."""

    code = "store_error"


class StoreUnavailable(StoreError):
    """The store could not be reached after every retry. Adapters answer 503 with Retry-After."""

    code = "store_unavailable"


class WriteRefused(StoreError):
    """A changed request's write could not be made durable under ``on_write_failure="refuse"``
    (the default of ``EndOfRequest`` and ``OnAttribute``): its changes were rolled back, and
    adapters answer ``503`` with ``Retry-After`` instead of acknowledging them."""

    code = "write_refused"


class ValueTooLarge(StoreError):
    """One session's write refused by the store because a value is larger than it takes (for
    MariaDB/MySQL, what ``max_allowed_packet`` lets through). The session's error, not an
    outage: the writer writes the other sessions and keeps this one dirty."""

    code = "value_too_large"

    def __init__(self, token: str, key: str, size: int, limit: int, *, app: str = "") -> None:
        from .logs import session_hash  # errors is imported by everything; logs imports none

        self.token = token
        self.key = key
        super().__init__(
            f"session {session_hash(app, token)} attribute {key!r}: {size} bytes, more than the {limit} "
            "this store takes"
        )


class CorruptSessionData(SessionKeeperError):
    """Stored bytes could not be turned back into values (truncated, tampered, wrong type)."""

    code = "corrupt_session_data"


class SerializationError(SessionKeeperError, TypeError):
    """A value cannot be serialized. Raised when the value is set, naming the key."""

    code = "unserializable_value"

    def __init__(self, key: str, value: object, reason: str) -> None:
        self.key = key
        super().__init__(
            f"session attribute {key!r}: a value of type {type(value).__name__} "
            f"cannot be serialized ({reason})"
        )


class CacheFull(SessionKeeperError):
    """The cache is full and ``overflow=False``: a new session is refused."""

    code = "cache_full"


class AccessTimeout(SessionKeeperError):
    """With ``serialize_access=True``, the session stayed busy longer than ``access_wait_s``."""

    code = "access_timeout"


class SessionInvalidated(SessionKeeperError):
    """The session was invalidated; it can no longer be read or written."""

    code = "session_invalidated"


class ManagerClosed(SessionKeeperError):
    """The manager was closed: it serves no new request and writes nothing more to its store."""

    code = "manager_closed"


class InvalidSessionId(SessionKeeperError, ValueError):
    """A session id that fails validation (length, alphabet)."""

    code = "invalid_session_id"


#: What an adapter answers with ``503 Service Unavailable`` and ``Retry-After`` when it happens
#: while resolving a request's session: the store is down or refuses to work (a schema newer than
#: this code, a missing table), the session stayed busy, or the manager was closed (a worker
#: shutting down). Never a 500, never an empty session.
UNAVAILABLE_ERRORS: tuple[type[SessionKeeperError], ...] = (
    StoreError,
    AccessTimeout,
    ManagerClosed,
)
