"""``Failover``: taking a session over, and giving up the ones this node no longer holds.

``recover`` runs in the request that asks for a session this node does not own (from
resolve.py), ``adopt`` there and on the worker receiving a handoff, ``forget`` in the request
that invalidates a session or rotates its id. See :mod:`.node` for the epochs that fence a
superseded owner.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from .backups import BadPayload, Copy, copy_from_wire
from .owned import Owned
from .placement import next_epoch

if TYPE_CHECKING:
    from .node import Replicator

Key = tuple[str, str]


class Failover:
    def __init__(self, replicator: Replicator) -> None:
        self._r = replicator

    def recover(self, app: str, token: str, route: tuple[str, ...]) -> Copy | None:
        """The newest copy of a session this node does not own, from this node's backups or the
        nodes the id names (backups first, then the owner); this node then owns it, at an
        epoch above any seen, and tells the cluster. ``None``: no copy anywhere (the store may
        have it)."""
        r = self._r
        key = (app, token)
        with r._lock:
            entry = r.owned.get(key)
            if entry is not None and entry.parked is not None:
                parked, entry.parked = entry.parked, None
                return parked
        r.start()
        r.transport.wait_connected(r.config.ack_timeout_s)  # the first attempt, or a reconnect
        # Every node the id names is asked, even with a copy here: this node may have been
        # paused, and its copy may be older than the one a node that took over meanwhile holds.
        # Then every other live member, since a backup replaced after the response's cookie
        # was made is named by no id. The newest copy wins.
        named = [n for n in (*route[1:], *route[:1]) if n != r.rt.node]
        copies = [c for c in [r.backups.take(key), *self._take_each(key, named)] if c]
        if not copies:
            others = [m.name for m in r.members.live() if m.name not in (*named, r.rt.node)]
            copies = self._take_each(key, others, first=True)
        if not copies:
            return None
        copy = max(copies, key=lambda c: (c.epoch, c.owner, c.version))
        self.adopt(copy)
        r.stats.add("replication_takeovers")
        return copy

    def _take_each(self, key: Key, nodes: list[str], first: bool = False) -> list[Copy]:
        """The copies ``nodes`` hold (an owner among them gives its session up); with
        ``first``, only the first found."""
        r = self._r
        found: list[Copy] = []
        for node in nodes:
            reply = r.ask(node, "take", {"a": key[0], "k": key[1]})
            if reply is not None and reply.get("r") == "ok":
                try:
                    found.append(copy_from_wire(reply["c"]))
                except (BadPayload, KeyError):
                    r.stats.add("replication_rejected_payload")
                    continue
                if first:
                    break
        return found

    def adopt(self, copy: Copy, parked: bool = False) -> Owned:
        """Own ``copy`` from now on, at a new epoch; its backups get it whole at the next
        request (with ``parked``, a handoff that leaves no request to wait for: on the sending
        thread, after the handoff was answered, so that the node handing off never waits on
        this node's own requests)."""
        r = self._r
        epoch = next_epoch([copy.epoch, r.backups.epoch_seen(copy.key)])
        entry = Owned(epoch, copy.version, r._place(copy.token), dict(copy.attributes))
        entry.parked = copy if parked else None
        with r._lock:
            r.owned[copy.key] = entry
        r.backups.drop(copy.key, epoch, owner=r.rt.node)
        r.tell_all("fence", {"a": copy.app, "k": copy.token, "e": epoch})
        if parked:

            def copy_now() -> None:
                with entry.lock:
                    self.copy_parked(entry, copy)

            r.in_background(copy_now)
        return entry

    def copy_parked(self, entry: Owned, copy: Copy) -> None:
        """Send a session handed here, that no request asked for yet, to its backups (chosen
        now when it has none); under ``entry.lock``."""
        r = self._r
        if not entry.backups:
            entry.set_backups(r._place(copy.token))
        moved = replace(copy, owner=r.rt.node, epoch=entry.epoch, version=entry.version)
        entry.set_backups(tuple(n for n in entry.backups if r._send(n, True, moved, {})))
        entry.needs_full = not entry.backups

    def forget(self, app: str, token: str) -> None:
        """The session was invalidated or took a new id: its backups drop their copies, and so
        do the live backups it replaced that were not told yet (:func:`.repair.drop_retired`):
        a stale copy would bring the ended session back at a takeover."""
        r = self._r
        with r._lock:
            entry = r.owned.pop((app, token), None)
        if entry is None:
            return
        live = {m.name for m in r.members.live()}
        retired = [n for n in entry.retired if n in live and n not in entry.backups]
        for node in (*entry.backups, *retired):
            if r.ask(node, "drop", {"a": app, "k": token, "e": entry.epoch}) is None:
                r.members.mark_dead(node)
        r.stats.add("replication_tombstones")
