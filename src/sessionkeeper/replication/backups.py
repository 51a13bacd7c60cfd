"""``Backups``: the copies this node holds of other nodes' sessions, and the wire forms of a copy.

A copy is the session as its owner last sent it: serialized attributes (the serializer's own
bytes, never decoded here), metadata, the owner's epoch and the replication version. A delta
applies only on top of the version held (:func:`.placement.judge_delta`); otherwise the answer
asks the owner for the whole session. Owners are ranked by epoch, then name
(:data:`.placement.Rank`). Copies are bounded like the cache (``cache_size``, least recently
touched out first, counted) and dropped once expired. The highest rank seen per session is kept
after a drop, bounded the same way, so that a superseded owner's late delta stays refused.

Thread safety: every method takes one lock.
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..stores import StoredSession
from .placement import Held, Rank, Verdict, judge_delta, judge_snapshot

Key = tuple[str, str]


class BadPayload(Exception):
    """A signed message whose payload does not have the expected shape."""


@dataclass(frozen=True, slots=True)
class Copy:
    app: str
    token: str
    owner: str
    epoch: int
    version: int
    attributes: dict[str, bytes] = field(default_factory=dict)
    created_at: float = 0.0
    last_access_at: float = 0.0
    timeout_s: float = 0.0
    principal: str | None = None
    store_version: int = 0  # the durable store's version the owner held (0: none)
    absolute_expires_at: float | None = None  # the absolute deadline (wall time), if any

    @property
    def key(self) -> Key:
        return (self.app, self.token)

    def expired(self, now: float) -> bool:
        deadline = self.absolute_expires_at
        return now - self.last_access_at > self.timeout_s or (
            deadline is not None and now >= deadline
        )

    def as_stored(self) -> StoredSession:
        return StoredSession(
            self.app,
            self.token,
            dict(self.attributes),
            self.store_version,
            self.created_at,
            self.last_access_at,
            self.timeout_s,
            self.principal,
            self.owner,
            self.absolute_expires_at,
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "a": self.app,
            "k": self.token,
            "o": self.owner,
            "e": self.epoch,
            "v": self.version,
            "at": self.attributes,
            "m": [self.created_at, self.last_access_at, self.timeout_s, self.principal],
            "sv": self.store_version,
            "x": self.absolute_expires_at,
        }


def copy_from_wire(p: dict[str, Any]) -> Copy:
    try:
        created_at, last_access_at, timeout_s, principal = p["m"]
        attrs = p["at"]
        if not all(isinstance(k, str) and isinstance(v, bytes) for k, v in attrs.items()):
            raise BadPayload("attributes")
        copy = Copy(
            _str(p["a"]), _str(p["k"]), _str(p["o"]), _int(p["e"]), _int(p["v"]), dict(attrs),
            float(created_at), float(last_access_at), float(timeout_s),
            None if principal is None else _str(principal), _int(p.get("sv", 0)),
            _deadline(p.get("x")),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadPayload(str(exc)) from exc
    return copy


class Keep(enum.Enum):
    """A delta's principal when its sender did not say (a node of an older version): the
    copy keeps the one it holds."""

    PRINCIPAL = 0


@dataclass(frozen=True, slots=True)
class Delta:
    """What one changed request did: the keys set (their new bytes) and removed, the
    replication version it goes from and to, and the session's metadata after it (its
    principal included: a login or a logout may change nothing else)."""

    app: str
    token: str
    owner: str
    epoch: int
    base_version: int
    version: int
    changed: dict[str, bytes]
    removed: tuple[str, ...]
    last_access_at: float
    timeout_s: float
    absolute_expires_at: float | None = None
    principal: str | Keep | None = Keep.PRINCIPAL

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "a": self.app, "k": self.token, "o": self.owner, "e": self.epoch,
            "bv": self.base_version, "v": self.version, "ch": self.changed,
            "rm": list(self.removed), "m": [self.last_access_at, self.timeout_s],
            "x": self.absolute_expires_at,
        }  # fmt: skip
        if not isinstance(self.principal, Keep):
            wire["pr"] = self.principal
        return wire


def delta_from_wire(p: dict[str, Any]) -> Delta:
    try:
        changed = p["ch"]
        if not all(isinstance(k, str) and isinstance(v, bytes) for k, v in changed.items()):
            raise BadPayload("changed")
        last_access_at, timeout_s = p["m"]
        return Delta(
            _str(p["a"]), _str(p["k"]), _str(p["o"]), _int(p["e"]), _int(p["bv"]), _int(p["v"]),
            dict(changed), tuple(_str(k) for k in p["rm"]), float(last_access_at), float(timeout_s),
            _deadline(p.get("x")), _principal(p["pr"]) if "pr" in p else Keep.PRINCIPAL,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadPayload(str(exc)) from exc


def _deadline(v: object) -> float | None:
    if v is None:
        return None
    if not isinstance(v, int | float) or isinstance(v, bool):
        raise TypeError("expected a deadline")
    return float(v)


def _principal(v: object) -> str | None:
    return None if v is None else _str(v)


def _str(v: object) -> str:
    if not isinstance(v, str):
        raise TypeError("expected a string")
    return v


def _int(v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError("expected an integer")
    return v


class Backups:
    def __init__(self, capacity: int, count: Callable[[str, int], None]) -> None:
        self.capacity = capacity
        self._count = count
        self._lock = threading.Lock()
        self.forget_all()

    def forget_all(self) -> None:
        self._copies: OrderedDict[Key, Copy] = OrderedDict()
        self._ranks: OrderedDict[Key, Rank] = OrderedDict()  # the highest owner rank seen

    def __len__(self) -> int:
        return len(self._copies)

    def get(self, key: Key) -> Copy | None:
        with self._lock:
            return self._copies.get(key)

    def held(self) -> list[Copy]:
        with self._lock:
            return list(self._copies.values())

    def epoch_seen(self, key: Key) -> int:
        with self._lock:
            return self._ranks.get(key, (0, ""))[0]

    def _held(self, key: Key) -> Held | None:
        copy = self._copies.get(key)
        if copy is not None:
            return (copy.epoch, copy.owner), copy.version
        seen = self._ranks.get(key)
        return None if seen is None else (seen, -1)  # dropped: any version needs a snapshot

    def apply_snapshot(self, copy: Copy) -> Verdict:
        with self._lock:
            rank = (copy.epoch, copy.owner)
            verdict = judge_snapshot(self._held(copy.key), rank, copy.version)
            if verdict is Verdict.APPLY:
                self._put(copy)
            return verdict

    def apply_delta(self, d: Delta) -> Verdict:
        with self._lock:
            key = (d.app, d.token)
            verdict = judge_delta(self._held(key), (d.epoch, d.owner), d.base_version, d.version)
            current = self._copies.get(key)
            if verdict is Verdict.APPLY and current is not None:
                attrs = {k: v for k, v in current.attributes.items() if k not in d.removed}
                attrs.update(d.changed)
                principal = current.principal if isinstance(d.principal, Keep) else d.principal
                # Built whole: dataclasses.replace costs about 3x as much, once per delta.
                updated = Copy(
                    current.app, current.token, current.owner, current.epoch, d.version, attrs,
                    current.created_at, d.last_access_at, d.timeout_s, principal,
                    current.store_version, d.absolute_expires_at,
                )  # fmt: skip
                self._put(updated)
            return verdict

    def drop(self, key: Key, epoch: int, *, owner: str, older_only: bool = False) -> bool:
        """Forget the copy held from ``owner`` at ``epoch`` or from a lower rank (an
        invalidation by its owner), or with ``older_only`` only from a lower one (``owner``
        announced that it owns the session at ``epoch``); remember that rank, so that lower
        owners stay refused."""
        rank = (epoch, owner)
        with self._lock:
            held = self._held(key)
            self._seen(key, rank)
            if held is not None and (held[0] > rank or (older_only and held[0] == rank)):
                return False
            return self._copies.pop(key, None) is not None

    def take(self, key: Key) -> Copy | None:
        """Remove and return the copy (its session becomes owned here)."""
        with self._lock:
            return self._copies.pop(key, None)

    def expire(self, now: float) -> int:
        with self._lock:
            gone = [k for k, c in self._copies.items() if c.expired(now)]
            for k in gone:
                del self._copies[k]
        if gone:
            self._count("replication_backups_expired", len(gone))
        return len(gone)

    def _put(self, copy: Copy) -> None:
        self._copies[copy.key] = copy
        self._copies.move_to_end(copy.key)
        self._seen(copy.key, (copy.epoch, copy.owner))
        evicted = 0
        while len(self._copies) > self.capacity:
            self._copies.popitem(last=False)
            evicted += 1
        if evicted:
            self._count("replication_backup_evictions", evicted)

    def _seen(self, key: Key, rank: Rank) -> None:
        self._ranks[key] = max(rank, self._ranks.get(key, (0, "")))
        self._ranks.move_to_end(key)
        while len(self._ranks) > 4 * self.capacity:
            self._ranks.popitem(last=False)
