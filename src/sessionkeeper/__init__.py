"""sessionkeeper: server-side HTTP sessions that survive the loss of the process that served them.

import sessionkeeper as sk
manager = sk.SessionManager(store="sqlite:///sessions.db", write=sk.TimeBased(interval_s=10))
with manager.request(app="shop", session_id=cookie_value) as session:
    session["cart"] = ["apple"]
"""

from __future__ import annotations

from .clock import Clock, FakeClock, SystemClock
from .errors import (
    AccessTimeout,
    CacheFull,
    ConfigurationError,
    CorruptSessionData,
    InvalidSessionId,
    ManagerClosed,
    SerializationError,
    SessionInvalidated,
    SessionKeeperError,
    StoreError,
    StoreUnavailable,
    ValueTooLarge,
    WriteRefused,
)
from .events import AttributeEvent, DestroyReason, SessionEvent, SessionListener
from .lifecycle import ActiveRequest
from .manager import SessionManager, close_all
from .policies import (
    AfterRequests,
    AfterUpdates,
    EndOfRequest,
    Manual,
    OnAttribute,
    TimeBased,
    WritePolicy,
    parse_policy,
)
from .replication import Replication
from .session import Session
from .stores import MemoryStore, RetryPolicy, Store, open_store
from .tracking import Mode, Tracking, encode_url

__version__ = "0.1.0"

__all__ = [
    "AccessTimeout",
    "ActiveRequest",
    "AfterRequests",
    "AfterUpdates",
    "AttributeEvent",
    "CacheFull",
    "Clock",
    "ConfigurationError",
    "CorruptSessionData",
    "DestroyReason",
    "EndOfRequest",
    "FakeClock",
    "InvalidSessionId",
    "ManagerClosed",
    "Manual",
    "MemoryStore",
    "Mode",
    "OnAttribute",
    "Replication",
    "RetryPolicy",
    "SerializationError",
    "Session",
    "SessionEvent",
    "SessionInvalidated",
    "SessionKeeperError",
    "SessionListener",
    "SessionManager",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "SystemClock",
    "TimeBased",
    "Tracking",
    "ValueTooLarge",
    "WritePolicy",
    "WriteRefused",
    "__version__",
    "close_all",
    "encode_url",
    "open_store",
    "parse_policy",
]
