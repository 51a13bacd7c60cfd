"""``Replication``: the options of memory-to-memory replication (``SessionManager(replication=)``).

Frozen and free of I/O, like :class:`~sessionkeeper.config.Settings`, which normalizes the
``replication`` option into one of these (a ``nats://`` URL gives the defaults).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigurationError
from ..policies import UNBOUNDED, MaxLoss

Ack = Literal["sync", "async"]

_CLUSTER_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class Replication:
    """Copies of every session in other nodes' memory, over NATS.

    ``replicas`` backups per session (``0``: the channel only); ``ack="sync"`` answers a changed
    request only after its backups acknowledged its delta (waiting at most ``ack_timeout_s`` per
    backup), ``"async"`` sends it after, at most ``async_window`` deltas in flight. ``key`` signs
    every message: any client of the NATS server could publish on the cluster's subjects.
    ``heartbeat_s`` is the beat period; a member is dead after three missed beats. ``options`` go
    to ``nats.connect`` (user, password, token, TLS)."""

    url: str = "nats://127.0.0.1:4222"
    replicas: int = 1
    ack: Ack = "sync"
    cluster: str = "sessionkeeper"
    key: bytes | str | None = field(default=None, repr=False)
    ack_timeout_s: float = 0.5
    heartbeat_s: float = 1.0
    async_window: int = 1000
    max_message_bytes: int = 1 << 20
    max_message_age_s: float = 60.0
    host: str | None = None  # the placement's notion of a machine; default: the host name
    options: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("nats://", "tls://", "ws://", "wss://")):
            raise ConfigurationError(f"replication url {self.url!r} is not a nats:// URL")
        if not isinstance(self.replicas, int) or not 0 <= self.replicas <= 3:
            raise ConfigurationError("replicas must be 0 to 3")
        if self.ack not in ("sync", "async"):
            raise ConfigurationError("ack must be 'sync' or 'async'")
        if not _CLUSTER_RE.fullmatch(self.cluster):
            raise ConfigurationError("cluster must be 1 to 64 characters of A-Z a-z 0-9 _ -")
        for name in ("ack_timeout_s", "heartbeat_s", "max_message_age_s"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be positive")
        if self.async_window < 1 or self.max_message_bytes < 1024:
            raise ConfigurationError("async_window must be >= 1, max_message_bytes >= 1024")

    @property
    def key_bytes(self) -> bytes:
        """The HMAC key; without one, the cluster name (which signs, but proves nothing)."""
        if self.key is None:
            return f"sessionkeeper:{self.cluster}".encode()
        return self.key.encode() if isinstance(self.key, str) else bytes(self.key)

    @property
    def dead_after_s(self) -> float:
        return 3 * self.heartbeat_s

    def max_loss(self, store_loss: MaxLoss, *, durable_store: bool) -> MaxLoss:
        """What a crash of one node may lose with this replication in front of a store whose
        write policy alone may lose ``store_loss`` (``policy.max_loss()``). An update is lost
        only if neither the store nor a backup got it, so each bound holds:

        - ``ack="sync"`` with backups: nothing (a changed request answers after a backup took
          its delta; with no backup and no durable store it is refused, a 503);
        - ``ack="async"`` with backups: at most the ``async_window`` requests still in flight;
        - ``replicas=0`` (the channel only): what the store may lose, all of it on ``memory://``.
        """
        if not durable_store:
            store_loss = UNBOUNDED  # the memory store dies with the process
        if not self.replicas:
            return store_loss
        if self.ack == "sync":
            return MaxLoss()
        return MaxLoss(
            store_loss.seconds,
            store_loss.updates,
            min(store_loss.requests, float(self.async_window)),
        )

    def crash_window_s(
        self, store_window_s: float, *, durable_store: bool, ack_lag_s: float
    ) -> float:
        """What a crash of one node may lose now, in seconds of acknowledged changes
        (``manager.stats()["crash_window_s"]``): an acknowledged change is lost only if neither
        the store nor a backup has it, so the shorter of ``store_window_s`` (the policy's window;
        everything on ``memory://``) and ``ack_lag_s``, the age of the oldest change no backup
        acknowledged yet. With ``ack="sync"`` that lag is 0 but for changes answered while no
        backup could take them (in front of a store, NATS away); with ``ack="async"`` it is the
        deltas in flight. ``replicas=0``: the store's window."""
        store = store_window_s if durable_store else math.inf
        if not self.replicas:
            return store
        return min(store, ack_lag_s)


def parse_replication(value: str | Replication | None) -> Replication | None:
    if value is None or isinstance(value, Replication):
        return value
    if isinstance(value, str):
        return Replication(value)
    raise ConfigurationError("replication must be a nats:// URL or sk.Replication(...)")
