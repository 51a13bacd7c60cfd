"""What a :class:`~.node.Replicator` tells about itself: its health (does every session it owns
have its replicas?) and the gauges of ``manager.stats()`` beside its counters. Read-only."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .owned import Owned

if TYPE_CHECKING:
    from .node import Replicator


def health(r: Replicator) -> dict[str, Any]:
    """Whether every owned session has ``replicas`` live copies (a rolling restart waits for
    ``healthy`` before stopping the next node). ``retiring``: owned sessions with a replaced
    backup that lives and may still hold a copy, until the housekeeping tells it to drop it
    (:func:`.repair.drop_retired`); a copy too many costs memory, not safety."""
    live = {m.name for m in r.members.live()}
    with r._lock:
        entries = list(r.owned.values())
    underreplicated = sum(1 for e in entries if short(r, e, live))
    retiring = sum(1 for e in entries if e.retired and live.intersection(e.retired))
    return {
        "healthy": r.transport.connected and underreplicated == 0,
        "connected": r.transport.connected,
        "node": r.rt.node,
        "owned": len(entries),
        "underreplicated": underreplicated,
        "retiring": retiring,
        "backups_held": len(r.backups),
        "members": sorted(live),
        "async_in_flight": r.async_in_flight(),
    }


def short(r: Replicator, entry: Owned, live: set[str]) -> bool:
    """Whether an owned session lacks some of its ``replicas`` live copies."""
    if not r.config.replicas:
        return False
    return entry.needs_full or sum(1 for b in entry.backups if b in live) < r.config.replicas


def ack_lag_s(r: Replicator) -> float:
    """The age of the oldest change of an owned session that no backup acknowledged yet: an
    async delta in flight, or a change answered while no backup could take it; 0 if none.
    Reads only the entries that have one (:meth:`.Replicator.oldest_unacked`)."""
    since = r.oldest_unacked()
    return 0.0 if since is None else max(0.0, r.rt.clock.monotonic() - since)


def stats(r: Replicator, store_window_s: float) -> dict[str, Any]:
    """The counters (``replication_*``) and the gauges of ``manager.stats()``, and what a crash
    of this node may lose now (``crash_window_s``, :meth:`.Replication.crash_window_s`) in front
    of a store whose policy alone may lose ``store_window_s``."""
    out: dict[str, Any] = r.stats.snapshot()
    h = health(r)
    lag = ack_lag_s(r)
    down_since = r.transport.down_since
    gap = 0.0 if down_since is None else time.monotonic() - down_since
    out.update(
        replication_members=len(h["members"]),
        replication_owned=h["owned"],
        replication_underreplicated=h["underreplicated"],
        replication_retiring=h["retiring"],
        replication_backups_held=h["backups_held"],
        replication_async_in_flight=h["async_in_flight"],
        replication_async_window=r.config.async_window,
        replication_connected=int(h["connected"]),
        replication_gap_s=gap,
        replication_ack_lag_s=lag,
        crash_window_s=r.config.crash_window_s(
            store_window_s, durable_store=r.durable, ack_lag_s=lag
        ),
    )
    return out
