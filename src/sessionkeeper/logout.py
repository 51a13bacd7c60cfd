"""Logout everywhere: ending every session of a principal (its owner) on every node.

The store finds the owner's sessions through its owner index and deletes each one through its
normal delete, leaving a tombstone: so every node learns of it as of any invalidation (the
tombstone feed its housekeeping reads drops cached copies; a write still in flight meets the
tombstone and is dropped). Here, on the calling node, cached copies are dropped at once, and each
session's destroyed event fires once, on this node: the store's delete reports a session as
ended to one caller only.

What the store does not hold cannot be found there: a session another node created and has not
written yet (a deferred write policy) survives; this node's own unwritten ones are ended.
"""

from __future__ import annotations

from .events import DestroyReason, SessionEvent
from .host import Host
from .runtime import Runtime
from .stores import StoredSession


def sessions_of(rt: Runtime, app: str, owner: str) -> list[StoredSession]:
    return rt.store.sessions_of(app, owner)


def invalidate_owner(rt: Runtime, host: Host, app: str, owner: str) -> int:
    """End every session of ``owner`` in ``app``; returns how many this call ended."""
    ended = rt.store.delete_owner(app, owner, grace_s=rt.settings.grace_s)
    for stored in ended:
        cached = rt.cache.get((app, stored.token))
        if cached is not None:
            host.end_cached(cached)  # counts it and fires its event, with the session object
            continue
        rt.stats.add("invalidated")
        if rt.events:
            rt.events.emit(
                "session_destroyed",
                SessionEvent(app, stored.token, None, DestroyReason.INVALIDATED),
            )
    # This node's own sessions of the owner that the store did not name: never written yet, or
    # bound to the owner here since their last write.
    mine = [s for s in rt.cache if s.app == app and s.owner == owner and s.created]
    for s in mine:
        host._invalidate(s)
    return len(ended) + len(mine)
