"""The wire format: msgpack-framed messages signed with the cluster key.

A frame is ``HMAC-SHA256(key, body) || body``; the body is a msgpack map: ``t`` the kind,
``c`` the cluster, ``n`` the sender node, ``b`` the sender's boot id (one per process start),
``q`` a sequence number per boot, ``ts`` the sender's wall time, ``p`` the payload (a map).
:meth:`Codec.decode` refuses, and counts by reason, a frame that is oversized, forged (bad
signature), malformed, of another cluster, too old or from the future (``max_age_s``), replayed
(a ``(node, boot, seq)`` seen before, or older than the window kept), or from a fenced boot.
Any client of the NATS server may publish on our subjects; only a holder of the key can be heard.

Thread safety: ``encode`` and ``decode`` may be called from any thread (one lock).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

MAC_BYTES = 32
REPLAY_WINDOW = 4096  # sequence numbers remembered per sender boot
KINDS = frozenset(
    {"hb", "leave", "delta", "snap", "drop", "take", "hand", "fence", "health", "reply"}
)


class Rejected(Exception):
    """A frame that must not be applied; ``reason`` is the counter's suffix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Message:
    kind: str
    node: str
    boot: str
    seq: int
    sent_at: float
    payload: dict[str, Any]


class _Window:
    """The sequence numbers seen from one sender boot: the highest, and which of the
    ``REPLAY_WINDOW`` below it arrived (messages of one sender may interleave across subjects)."""

    __slots__ = ("highest", "seen")

    def __init__(self) -> None:
        self.highest = 0
        self.seen: set[int] = set()

    def accept(self, seq: int) -> bool:
        if seq <= self.highest - REPLAY_WINDOW or seq in self.seen:
            return False
        self.seen.add(seq)
        if seq > self.highest:
            self.highest = seq
            floor = seq - REPLAY_WINDOW
            if len(self.seen) > 2 * REPLAY_WINDOW:
                self.seen = {s for s in self.seen if s > floor}
        return True


class Codec:
    def __init__(
        self,
        key: bytes,
        cluster: str,
        node: Callable[[], str],
        wall: Callable[[], float],
        *,
        max_bytes: int,
        max_age_s: float,
    ) -> None:
        self._mac = hmac.new(key, digestmod=hashlib.sha256)  # keyed once; each frame a copy
        self._cluster = cluster
        self._node = node
        self._wall = wall
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self.reset_identity()

    def reset_identity(self) -> None:
        """A new boot id and sequence (at construction and in a forked child, which is a new
        sender); forgets the windows of senders heard."""
        self.boot = os.urandom(8).hex()
        self._seq = itertools.count(1)
        self._windows: dict[tuple[str, str], _Window] = {}
        self._fenced: set[tuple[str, str]] = set()

    def fence(self, node: str, boot: str) -> None:
        """Refuse every later frame of that sender boot."""
        with self._lock:
            self._fenced.add((node, boot))

    def encode(self, kind: str, payload: dict[str, Any]) -> bytes:
        assert kind in KINDS
        with self._lock:
            seq = next(self._seq)
        body: bytes = msgpack.packb(
            {
                "t": kind,
                "c": self._cluster,
                "n": self._node(),
                "b": self.boot,
                "q": seq,
                "ts": self._wall(),
                "p": payload,
            },
            use_bin_type=True,
        )
        return self._sign(body) + body

    def _sign(self, body: bytes) -> bytes:
        """HMAC-SHA256 of ``body``: a copy of the keyed state (its key's two padded blocks
        hashed once, at construction), not a keying per frame. The template is never updated,
        so threads may copy it concurrently."""
        mac = self._mac.copy()
        mac.update(body)
        return mac.digest()

    def decode(self, frame: bytes) -> Message:
        """The message in ``frame``, or :class:`Rejected` (nothing of it may be used)."""
        if len(frame) > self.max_bytes:
            raise Rejected("oversized")
        if len(frame) <= MAC_BYTES:
            raise Rejected("malformed")
        mac, body = frame[:MAC_BYTES], frame[MAC_BYTES:]
        if not hmac.compare_digest(mac, self._sign(body)):
            raise Rejected("forged")
        msg = self._parse(body)
        if abs(self._wall() - msg.sent_at) > self.max_age_s:
            raise Rejected("stale")
        with self._lock:
            sender = (msg.node, msg.boot)
            if sender in self._fenced:
                raise Rejected("fenced")
            window = self._windows.get(sender)
            if window is None:
                window = self._windows[sender] = _Window()
            if not window.accept(msg.seq):
                raise Rejected("replayed")
        return msg

    def _parse(self, body: bytes) -> Message:
        try:
            raw = msgpack.unpackb(body, raw=False, strict_map_key=True, max_bin_len=self.max_bytes)
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            raise Rejected("malformed") from exc
        if not isinstance(raw, dict):
            raise Rejected("malformed")
        kind, node, boot = raw.get("t"), raw.get("n"), raw.get("b")
        seq, sent_at, payload = raw.get("q"), raw.get("ts"), raw.get("p")
        if (
            kind not in KINDS
            or not isinstance(node, str)
            or not isinstance(boot, str)
            or not isinstance(seq, int)
            or isinstance(seq, bool)
            or not isinstance(sent_at, int | float)
            or not isinstance(payload, dict)
        ):
            raise Rejected("malformed")
        if raw.get("c") != self._cluster:
            raise Rejected("foreign")
        return Message(kind, node, boot, seq, float(sent_at), payload)
