"""``Handlers``: what a node does with each message of the cluster (on the transport's worker).

Broadcast (``sessionkeeper.<cluster>.all``): ``hb`` (a member's beat), ``leave``, ``fence`` (a
session was taken over at a new epoch: an owner of a lower rank, :data:`.placement.Rank`,
drops its copy, backups forget copies of lower ranks), ``health`` (another process asks,
:mod:`.probe`: this node's ``health()`` goes to its reply inbox). Addressed to this node (``....n.<node>``), each answered with a signed ``reply``:
``delta`` and ``snap`` (apply to the backup copy: ``ok``, ``dup``, ``snap`` asking for the whole
session, or ``fenced``), ``drop`` (a tombstone), ``take`` (another node takes the session over:
the copy held here, and an owner gives up its own), ``hand`` (a graceful handoff: own it now).
A frame that fails the codec's checks is counted ``replication_rejected_<reason>`` and ignored;
so is a well signed one of the wrong shape, or a copy or delta whose owner is not its sender
(``replication_rejected_payload``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .backups import BadPayload, Copy, copy_from_wire, delta_from_wire
from .codec import Message, Rejected
from .owned import Owned, copy_of, serialize
from .placement import Member, Verdict

if TYPE_CHECKING:
    from .node import Replicator

log = logging.getLogger("sessionkeeper.replication")


class Handlers:
    def __init__(self, repl: Replicator) -> None:
        self._r = repl

    def handle(self, subject: str, frame: bytes) -> bytes | Callable[[], bytes | None] | None:
        """On the transport's loop: checks the frame and applies what never blocks (beats,
        copies, drops, fences); a takeover or a handoff is returned to run on the worker."""
        try:
            msg = self._r.codec.decode(frame)
        except Rejected as exc:
            self._r.stats.add(f"replication_rejected_{exc.reason}")
            return None
        if msg.node == self._r.rt.node:
            return None  # our own broadcast
        broadcast = subject == self._r.subject()
        if (msg.kind in ("take", "hand") and not broadcast) or msg.kind == "health":
            return lambda: self._answer(msg, broadcast)  # on the worker: it takes locks
        return self._answer(msg, broadcast)

    def _answer(self, msg: Message, broadcast: bool) -> bytes | None:
        try:
            answer = self._dispatch(msg, broadcast)
        except BadPayload:
            self._r.stats.add("replication_rejected_payload")
            return None
        if answer is None:
            return None
        frame = self._r.codec.encode("reply", answer)
        self._r.stats.sent(frame)
        return frame

    def _dispatch(self, msg: Message, broadcast: bool) -> dict[str, Any] | None:
        p, kind = msg.payload, msg.kind
        if broadcast:
            if kind == "hb" and isinstance(p.get("h"), str):
                self._r.members.beat(Member(msg.node, p["h"]))
                if p.get("j") is True:
                    self._r.beat()  # a member joined: let it know us now
            elif kind == "leave":
                self._r.members.leave(msg.node)
            elif kind == "fence":
                self._fence(_key(p), _epoch(p), msg.node)
            elif kind == "health":  # another process asks (probe.py): answered to its inbox
                return self._r.health()
            return None
        if kind == "delta":
            delta = delta_from_wire(p)
            _sent_by_owner(delta.owner, msg)
            return self._applied(self._r.backups.apply_delta(delta))
        if kind == "snap":
            copy = copy_from_wire(p)
            _sent_by_owner(copy.owner, msg)
            return self._applied(self._r.backups.apply_snapshot(copy))
        if kind == "drop":
            self._r.backups.drop(_key(p), _epoch(p), owner=msg.node)
            return {"r": "ok"}
        if kind == "take":
            return self._take(_key(p))
        if kind == "hand":
            self._r.failover.adopt(copy_from_wire(p), parked=True)
            self._r.stats.add("replication_handoffs_received")
            return {"r": "ok"}
        return None

    def _applied(self, verdict: Verdict) -> dict[str, Any]:
        counter, answer = _VERDICTS[verdict]
        self._r.stats.add(counter)
        return {"r": answer}

    def _fence(self, key: tuple[str, str], epoch: int, owner: str) -> None:
        """``owner`` announced that it owns the session at ``epoch``: an owner here of a lower
        rank (:data:`.placement.Rank`) gives it up, a copy from one is dropped."""
        entry = self._r.owned.get(key)
        if entry is not None and (entry.epoch, self._r.rt.node) < (epoch, owner):
            self._r._fenced(key)
        self._r.backups.drop(key, epoch, owner=owner, older_only=True)

    def _take(self, key: tuple[str, str]) -> dict[str, Any]:
        """Another node takes the session over: give it the newest copy held here. An owner that
        is asked (the balancer sent the session elsewhere while this node lives) gives up its
        own copy with its unreplicated changes; it is no longer the owner."""
        with self._r._lock:
            entry = self._r.owned.pop(key, None)
        cached = self._r.rt.cache.get(key)
        if entry is not None:
            copy = _stamped(entry, self._r.rt.node)
            if copy is None and cached is not None:
                blobs = serialize(cached, self._r.rt.serializer)
                copy = copy_of(cached, self._r.rt.node, entry, blobs, entry.version + 1)
            if cached is not None:
                self._r.rt.cache.remove(key, cached)
            if copy is not None:
                self._r.stats.add("replication_given_up")
                return {"r": "ok", "c": copy.to_wire()}
        copy = self._r.backups.get(key)
        return {"r": "none"} if copy is None else {"r": "ok", "c": copy.to_wire()}

    def hand_off_all(self) -> int:
        """At a graceful stop: each owned session goes whole to its first backup that takes it;
        that backup owns it from then on. Returns how many were handed."""
        r = self._r
        with r._lock:
            owned = list(r.owned.items())
        handed = 0
        silent: set[str] = set()
        for key, entry in owned:
            cached = r.rt.cache.get(key)
            with entry.lock:
                copy = _stamped(entry, r.rt.node)
                if copy is None and cached is not None and cached.created:
                    blobs = serialize(cached, r.rt.serializer)
                    copy = copy_of(cached, r.rt.node, entry, blobs, entry.version + 1)
                if copy is None:
                    continue
                # Its backups first (they hold it already), then any other live member: the
                # message carries the whole session.
                others = r._place(copy.token, exclude=(*entry.backups, *silent))
                # No longer owned while it is handed: the new owner's announcement may come
                # before its answer, and it does not fence a stale owner.
                with r._lock:
                    r.owned.pop(key, None)
                for node in (*entry.backups, *others):
                    if node in silent:
                        continue
                    reply = r.ask(node, "hand", copy.to_wire())
                    if reply is None:
                        silent.add(node)  # each wait costs ack_timeout_s: ask it no more
                    elif reply.get("r") == "ok":
                        handed += 1
                        break
                else:  # nobody took it: still ours
                    with r._lock:
                        r.owned.setdefault(key, entry)
        r.stats.add("replication_handoffs", handed)
        if handed < len(owned):
            log.warning("replication: %d sessions could not be handed off", len(owned) - handed)
        return handed


#: What a backup counts, and answers, for each verdict on a delta or copy it received (one
#: lookup per message: an enum member's hash is computed in Python).
_VERDICTS = {
    Verdict.APPLY: ("replication_applied", "ok"),
    Verdict.DUPLICATE: ("replication_duplicates", "dup"),
    Verdict.SNAPSHOT: ("replication_gaps", "snap"),
    Verdict.FENCED: ("replication_refused", "fenced"),
}


def _stamped(entry: Owned, node: str) -> Copy | None:
    """A parked copy (handed here, asked for by no request yet) as this node owns it: its rank,
    not the previous owner's, so that a node it goes to next owns it above this one."""
    parked = entry.parked
    if parked is None:
        return None
    return replace(parked, owner=node, epoch=entry.epoch, version=entry.version)


def _sent_by_owner(owner: str, msg: Message) -> None:
    """A copy or a delta comes from its owner, whose rank it carries: one naming another node
    is refused (a member cannot speak for another's rank)."""
    if owner != msg.node:
        raise BadPayload("owner is not the sender")


def _key(p: dict[str, Any]) -> tuple[str, str]:
    app, token = p.get("a"), p.get("k")
    if not isinstance(app, str) or not isinstance(token, str):
        raise BadPayload("key")
    return app, token


def _epoch(p: dict[str, Any]) -> int:
    epoch = p.get("e")
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        raise BadPayload("epoch")
    return epoch
