"""What the owner's housekeeping does for the backups of the sessions it owns (from
:meth:`.node.Replicator.housekeep`, while connected): copy a session that lacks a live backup to
a new one, and tell a replaced backup that lives again to drop the copy it still holds. So that
after churn each session has ``replicas`` copies: not fewer (a rolling restart waits for that),
and not one per backup it ever had."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import StoreUnavailable
from ..logs import fields, session_hash
from ..session import Session
from . import observe

if TYPE_CHECKING:
    from .node import Replicator

log = logging.getLogger("sessionkeeper.replication")

Key = tuple[str, str]


def repair(r: Replicator, cached: dict[Key, Session]) -> None:
    """Copy every owned session that lacks a live backup, whole, to a new one (its backup
    stopped or crashed, NATS came back): else a session no request asks for would stay in
    one process, and a rolling restart waiting for health would wait for it forever."""
    live = {m.name for m in r.members.live()}
    with r._lock:
        short = [(k, e) for k, e in r.owned.items() if observe.short(r, e, live)]
    for key, entry in short:
        try:
            with entry.lock:
                entry.set_backups(tuple(b for b in entry.backups if b in live))
                parked = entry.parked
                if parked is not None:
                    r.failover.copy_parked(entry, parked)
            s = cached.get(key)
            if parked is None and s is not None and s.created:
                entry.needs_full = True
                r._replicate(s, entry)
        except StoreUnavailable as exc:  # fenced, or still no backup
            log.info(
                "replication: session %s not repaired: %s",
                session_hash(*key),
                exc,
                extra=fields(*key, exc.code),
            )
        r.stats.add("replication_repairs")


def drop_retired(r: Replicator) -> None:
    """Tell each replaced backup that lives again (it was paused, or cut off from NATS, and
    beats again) to drop the copy it may still hold. A node that does not answer is asked
    again at the next pass."""
    live = {m.name for m in r.members.live()}
    with r._lock:
        retired = [(k, e) for k, e in r.owned.items() if live.intersection(e.retired)]
    for (app, token), entry in retired:
        with entry.lock:  # not while a request chooses this node again
            for node in [n for n in entry.retired if n in live]:
                if r.ask(node, "drop", {"a": app, "k": token, "e": entry.epoch}) is not None:
                    entry.retired = tuple(n for n in entry.retired if n != node)
                    r.stats.add("replication_retired_dropped")
