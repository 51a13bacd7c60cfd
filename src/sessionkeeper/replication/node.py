"""``Replicator``: one manager's side of memory-to-memory replication (the manager owns one).

The manager layer calls it at five points, each from the thread serving the request:
``suffix`` (the id's route: owner, then backups), ``after_request`` (a request ended; its delta
goes to the backups: with ``ack="sync"`` before returning, with ``"async"`` on a sending
thread), ``recover`` (a session not owned here is asked for: from the nodes the id names; this
node becomes its owner at a new epoch), ``forget`` (invalidated or rotated away: tombstones go
to the backups) and ``close`` (owned sessions are handed to their backups). Taking over is in
:mod:`.failover`, the housekeeping's repairs of backups in :mod:`.repair`; messages from other
nodes are handled on the transport's loop thread, a takeover on its worker (:mod:`.handlers`).

Fencing: each owner owns a session at an epoch; a node that takes a session over owns it at a
higher one and says so to the cluster. Owners are ranked by epoch, then node name (two that took
it over at once may share an epoch: :data:`.placement.Rank`). A backup refuses a delta from a
lower rank than its copy's; the stale owner hearing the refusal (or the announcement) drops its
copy, counted ``replication_fenced``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import forks
from ..errors import StoreUnavailable
from ..logs import fields, session_hash
from ..session import Session
from . import observe, repair
from .backups import Backups, Copy
from .codec import Codec, Rejected
from .counters import ReplicationCounters
from .membership import Membership
from .owned import Owned, copy_of, delta_of, meta_of, serialize
from .placement import Member, choose_backups, next_epoch
from .settings import Replication
from .transport import Transport

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("sessionkeeper.replication")

Key = tuple[str, str]


class ReplicationUnavailable(StoreUnavailable):
    """A changed request could not be acknowledged by any other node (``ack="sync"``, no durable
    store): answered 503 rather than acknowledging an update that lives in one process only."""

    code = "replication_unavailable"


class Fenced(StoreUnavailable):
    """This node's copy of the session was superseded by a newer owner; it was dropped."""

    code = "replication_fenced"


class Replicator:
    def __init__(self, rt: Runtime, config: Replication, durable_store: bool) -> None:
        self.rt = rt
        self.config = config
        self.durable = durable_store
        self._host = config.host or socket.gethostname()
        self.codec = Codec(
            config.key_bytes, config.cluster, lambda: rt.node, rt.clock.time,
            max_bytes=config.max_message_bytes, max_age_s=config.max_message_age_s,
        )  # fmt: skip
        self.members = Membership(self.me, rt.clock.monotonic, config.dead_after_s)
        self.stats = ReplicationCounters()
        self.backups = Backups(rt.settings.cache_size, self.stats.add)
        from .failover import Failover  # these two modules use this one's names
        from .handlers import Handlers

        self.handlers = Handlers(self)
        self.failover = Failover(self)
        self.transport = Transport(
            config.url, config.options, self._subjects, self.handlers.handle,
            self._connection_changed, (config.heartbeat_s, self.beat),
        )  # fmt: skip
        self._reset()
        forks.at_fork_in_child(self, Replicator._reset_in_child)

    def _reset(self) -> None:
        self.owned: dict[Key, Owned] = {}
        #: The owned entries with a change no backup acknowledged (under ``_lock``): the ack
        #: lag is read from these few, not from every owned session.
        self.unacked: dict[Owned, Key] = {}
        self._lock = threading.Lock()
        self._sender: concurrent.futures.ThreadPoolExecutor | None = None
        self._in_flight = 0
        self._joined = False  # connected once: the next connection is a reconnect
        #: Called with each acknowledgement's wait (the metrics' histogram), when set.
        self.observer: Callable[[float], None] | None = None
        self.closed = False

    def _reset_in_child(self) -> None:
        self._reset()
        self.codec.reset_identity()
        self.members.forget_all()
        self.backups.forget_all()

    # -- identity and the wire ---------------------------------------------------------------

    def me(self) -> Member:
        return Member(self.rt.node, self._host)

    def subject(self, node: str | None = None) -> str:
        tail = "all" if node is None else f"n.{node}"
        return f"sessionkeeper.{self.config.cluster}.{tail}"

    def _subjects(self) -> list[str]:
        return [self.subject(), self.subject(self.rt.node)]

    def start(self) -> None:
        if not self.closed:
            self.transport.start()

    def beat(self, *, joining: bool = False) -> None:
        """Say this node lives; ``joining`` asks every member to beat back at once, so that a
        node just (re)connected knows the others before its first request needs a backup."""
        payload: dict[str, Any] = {"h": self._host, "j": joining}
        if self.transport.publish(self.subject(), self.codec.encode("hb", payload)):
            self.stats.add("replication_heartbeats")

    def _connection_changed(self, up: bool) -> None:
        if up:
            if self._joined:
                self.stats.add("replication_reconnects")
            self._joined = True
            self.beat(joining=True)
            with self._lock:
                for entry in self.owned.values():
                    entry.needs_full = True  # deltas may have been lost meanwhile
        else:
            self.stats.add("replication_disconnects")
            log.warning("replication: NATS unreachable; sessions are served, copies wait")

    def ask(self, node: str, kind: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Send to ``node`` and wait for its signed reply (at most ``ack_timeout_s``); ``None``
        when none came or it failed the checks (counted)."""
        frame = self.codec.encode(kind, payload)
        if self.transport.connected:
            self.stats.sent(frame)
        started = time.perf_counter()
        raw = self.transport.request(self.subject(node), frame, self.config.ack_timeout_s)
        waited = time.perf_counter() - started
        if raw is None:
            self.stats.add("replication_unanswered")
            return None
        try:
            msg = self.codec.decode(raw)
        except Rejected as exc:
            self.stats.add(f"replication_rejected_{exc.reason}")
            return None
        if msg.kind != "reply" or msg.node != node:
            return None
        if kind in ("delta", "snap"):
            self.stats.acked(waited)
            if self.observer is not None:
                self.observer(waited)
        return msg.payload

    def tell_all(self, kind: str, payload: dict[str, Any]) -> None:
        frame = self.codec.encode(kind, payload)
        if self.transport.publish(self.subject(), frame):
            self.stats.sent(frame)

    # -- placement ---------------------------------------------------------------------------------

    def suffix(self, s: Session) -> str:
        """The id's route for ``s``: this node, then its backups (chosen now if it has none)."""
        entry = self.owned.get((s.app, s.token))
        backups = entry.backups if entry is not None else self._place(s.token)
        return ".".join((self.rt.node, *backups))

    def _place(self, token: str, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
        live = [m for m in self.members.live() if m.name not in exclude]
        return choose_backups(token, self.me(), live, self.config.replicas)

    def _entry(self, s: Session) -> Owned:
        key = (s.app, s.token)
        with self._lock:
            entry = self.owned.get(key)
            if entry is None:
                epoch = next_epoch([self.backups.epoch_seen(key)])
                entry = self.owned[key] = Owned(epoch, 0, self._place(s.token))
            return entry

    # -- after a request ------------------------------------------------------------------------

    def after_request(self, s: Session) -> None:
        """Replicate what the request changed. With ``ack="sync"`` every backup has acknowledged
        it on return; raises :class:`Fenced` when a newer owner exists (the copy is dropped) and
        :class:`ReplicationUnavailable` when no backup could take it and no store holds it."""
        if self.closed or not s.created:
            return
        self.start()
        self.transport.wait_first_attempt()  # the response names this node: reachable first
        entry = self._entry(s)
        with self._lock:
            entry.changed(self.rt.clock.monotonic())
            self.unacked[entry] = (s.app, s.token)
        if self.config.ack == "sync":
            self._replicate(s, entry)
            return
        with self._lock:
            if self._in_flight >= self.config.async_window:
                self.stats.add("replication_async_overflow")
                entry.needs_full = True  # the next one that is sent carries everything
                return
            self._in_flight += 1
        self.in_background(lambda: self._replicate_async(s, entry))

    def in_background(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the sending thread (one, in submission order)."""
        with self._lock:
            if self._sender is None:
                self._sender = concurrent.futures.ThreadPoolExecutor(1, "sessionkeeper-repl-send")
            sender = self._sender
        try:
            sender.submit(fn)
        except RuntimeError:  # shut down: closing
            log.debug("replication: closing, background work dropped")

    def async_in_flight(self) -> int:
        return self._in_flight

    def _replicate_async(self, s: Session, entry: Owned) -> None:
        try:
            self._replicate(s, entry)
        except Exception as exc:
            log.warning(
                "replication of session %s failed: %s",
                session_hash(s.app, s.token),
                exc,
                extra=fields(s.app, s.token, getattr(exc, "code", None)),
            )
        finally:
            with self._lock:
                self._in_flight -= 1

    def _replicate(self, s: Session, entry: Owned) -> None:
        with entry.lock:
            seen = entry.changes
            blobs = serialize(s, self.rt.serializer)
            version = entry.version + 1
            full = entry.needs_full
            delta = delta_of(s, self.rt.node, entry, blobs, version)
            touch_due = s.last_access_at - entry.last_access_sent > s.timeout_s / 4
            meta = meta_of(s)
            changed = bool(delta.changed or delta.removed) or meta != entry.meta_sent
            if not full and not changed and not touch_due:
                self._acked(entry, seen)
                return
            if not entry.backups and self.config.replicas:
                up_since = self.transport.up_since
                if up_since is None or time.monotonic() - up_since < self.config.dead_after_s:
                    # Just (re)connected: the members' answers to our first beat may be on
                    # their way, or the beat itself (it goes out on the transport's worker
                    # thread, after ``connected``). Real time: about the network, not sessions.
                    self.members.wait_for(lambda live: len(live) > 1, self.config.ack_timeout_s)
                entry.set_backups(self._place(s.token))
            copy = copy_of(s, self.rt.node, entry, blobs, version)
            kept: list[str] = []
            for node in entry.backups:
                if self._send(node, full, copy, delta.to_wire()):
                    kept.append(node)
                else:
                    kept.extend(self._replace(s, entry, node, kept, copy))
            entry.set_backups(tuple(dict.fromkeys(kept)))
            entry.blobs, entry.version = blobs, version
            entry.needs_full = False
            entry.last_access_sent = s.last_access_at
            entry.meta_sent = meta
            if entry.backups:
                self.stats.add("replication_snapshots" if full else "replication_deltas")
            if entry.backups or not self.config.replicas:
                self._acked(entry, seen)
            if self.config.replicas and not entry.backups:
                entry.needs_full = True
                self.stats.add("replication_unreplicated")
                if self.config.ack == "sync" and not self.durable and changed:
                    raise ReplicationUnavailable("no other node acknowledged the change")

    def _acked(self, entry: Owned, seen: int) -> None:
        with self._lock:
            if entry.acked(seen):
                self.unacked.pop(entry, None)

    def oldest_unacked(self) -> float | None:
        """When the oldest change no backup acknowledged was made (monotonic), of a session
        still owned here; ``None`` if there is none. Forgets the entries no longer owned."""
        with self._lock:
            gone = [e for e, key in self.unacked.items() if self.owned.get(key) is not e]
            for e in gone:
                del self.unacked[e]
            since = [e.unacked_since for e in self.unacked if e.unacked_since is not None]
        return min(since) if since else None

    def _send(self, node: str, full: bool, copy: Copy, delta: dict[str, Any]) -> bool:
        """One backup's copy brought to ``copy``: by the delta, or whole when asked or needed."""
        reply = None if full else self.ask(node, "delta", delta)
        if reply is not None and reply.get("r") == "snap":
            self.stats.add("replication_snapshot_requests")
            reply = None
            full = True
        if full:
            reply = self.ask(node, "snap", copy.to_wire())
        if reply is None:
            return False
        if reply.get("r") == "fenced":
            self._fenced((copy.app, copy.token))
            raise Fenced(f"session {session_hash(copy.app, copy.token)} is owned by a newer owner")
        return reply.get("r") in ("ok", "dup")

    def _replace(
        self, s: Session, entry: Owned, dead: str, kept: list[str], copy: Copy
    ) -> list[str]:
        """``dead`` did not answer: marked dead, and a new backup gets the whole copy. One that
        does not answer either is retired at once: it may apply the copy late, and is then
        told to drop it like a replaced backup."""
        self.members.mark_dead(dead)
        self.stats.add("replication_backups_replaced")
        log.warning("replication: %s did not answer; choosing another backup", dead)
        exclude = (dead, *entry.backups, *kept)
        for node in self._place(s.token, exclude)[:1]:
            if self._send(node, True, copy, {}):
                return [node]
            if node not in entry.retired:
                entry.retired = (*entry.retired, node)
        return []

    def _fenced(self, key: Key) -> None:
        with self._lock:
            self.owned.pop(key, None)
        cached = self.rt.cache.get(key)
        if cached is not None:
            self.rt.cache.remove(key, cached)
        self.stats.add("replication_fenced")
        log.warning(
            "replication: session %s has a newer owner; this copy dropped",
            session_hash(*key),
            extra=fields(*key),
        )

    # -- failover (failover.py) -----------------------------------------------------------------

    def recover(self, app: str, token: str, route: tuple[str, ...]) -> Copy | None:
        return self.failover.recover(app, token, route)

    def forget(self, app: str, token: str) -> None:
        self.failover.forget(app, token)

    # -- observation and shutdown --------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return observe.health(self)

    def stats_view(self, store_window_s: float) -> dict[str, Any]:
        """The replication keys of ``stats()``, and its ``crash_window_s`` given the store's
        (the policy's) window."""
        return observe.stats(self, store_window_s)

    def housekeep(self) -> None:
        """Drop expired backup copies, and the records of owned sessions that this node no
        longer holds: evicted or swept from the cache (their backups' copies expire on their
        own), or handed here and expired before any request asked for them. Then repair what
        lacks a live backup, and tell replaced backups to drop their copies. Runs on the
        housekeeping thread."""
        now = self.rt.clock.time()
        self.backups.expire(now)
        cached = {(s.app, s.token): s for s in self.rt.cache.snapshot()}
        with self._lock:
            stale = [
                key
                for key, entry in self.owned.items()
                if (entry.parked.expired(now) if entry.parked is not None else key not in cached)
            ]
            for key in stale:
                del self.owned[key]
        if stale:
            self.stats.add("replication_owned_dropped", len(stale))
        if self.transport.connected:
            repair.repair(self, cached)
            repair.drop_retired(self)

    def close(self, *, handoff: bool = True) -> int:
        """Hand every owned session to its first live backup (which becomes its owner), leave,
        and disconnect. Returns how many were handed off."""
        if self.closed:
            return 0
        handed = self.handlers.hand_off_all() if handoff and self.transport.connected else 0
        self.closed = True
        if self._sender is not None:
            self._sender.shutdown(wait=True)
        self.tell_all("leave", {})
        self.transport.close(graceful=handoff)
        return handed
