"""Asking a running cluster whether every session has its replicas, from another process (the
CLI ``sessionkeeper replication-health``, :func:`health_app`, a rolling-restart script).

The question goes over the cluster's own NATS channel: one signed ``health`` message on
``sessionkeeper.<cluster>.all`` with a reply inbox. Every member answers with its
``replication_health()``, signed, computed when asked (a heartbeat would be up to a period old,
and would make the prober a member). The probe collects the answers until every member that any
answer names has answered, or ``timeout_s`` passed. The cluster is healthy when at least
``members`` nodes (default 1) answered, none is missing, and each says it is healthy. The prober
holds the cluster key (it signs the question and checks the answers) and never joins: it sends
no beat, so no session is placed on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Any

from .codec import Codec, Rejected
from .settings import Replication

#: The environment variable the CLI reads the cluster key from (never from argv: ps shows it).
KEY_ENV = "SESSIONKEEPER_REPLICATION_KEY"


@dataclass
class ClusterHealth:
    """The answers of one probe. ``reachable`` is false when NATS could not be reached."""

    members: int = 1
    reachable: bool = True
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> its health
    rejected: int = 0  # answers that failed the signature or the other checks

    @property
    def named(self) -> set[str]:
        """Every member some answer names, and every node that answered."""
        names = set(self.answers)
        for answer in self.answers.values():
            names.update(m for m in answer.get("members", ()) if isinstance(m, str))
        return names

    @property
    def missing(self) -> list[str]:
        return sorted(self.named - set(self.answers))

    @property
    def complete(self) -> bool:
        return len(self.answers) >= self.members and not self.missing

    @property
    def healthy(self) -> bool:
        return (
            self.reachable
            and self.complete
            and all(a.get("healthy") is True for a in self.answers.values())
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "reachable": self.reachable,
            "nodes": dict(sorted(self.answers.items())),
            "missing": self.missing,
            "underreplicated": sum(int(a.get("underreplicated", 0)) for a in self.answers.values()),
            "rejected": self.rejected,
        }


def cluster_health(
    config: Replication, *, timeout_s: float = 1.0, members: int = 1
) -> ClusterHealth:
    """Ask every member of ``config.cluster`` once (at most ``timeout_s`` for the answers)."""
    return asyncio.run(_probe(config, timeout_s, members))


def wait_healthy(
    config: Replication, *, wait_s: float, timeout_s: float = 1.0, members: int = 1
) -> ClusterHealth:
    """Ask again until the cluster is healthy or ``wait_s`` passed; the last answer."""
    deadline = time.monotonic() + wait_s
    while True:
        result = cluster_health(config, timeout_s=timeout_s, members=members)
        if result.healthy or time.monotonic() >= deadline:
            return result
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))  # between two questions


async def _probe(config: Replication, timeout_s: float, members: int) -> ClusterHealth:
    import nats  # the extra sessionkeeper[nats]

    result = ClusterHealth(members=members)

    async def quiet(_exc: Exception) -> None:
        return None  # a refused connection is the answer, not a traceback

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers=[config.url],
                allow_reconnect=False,
                connect_timeout=timeout_s,
                max_reconnect_attempts=1,  # nats-py: 0 retries the first connect forever
                reconnect_time_wait=0.1,
                error_cb=quiet,
                **dict(config.options or {}),
            ),
            4 * timeout_s,
        )
    except Exception:
        result.reachable = False
        return result
    node = f"probe-{os.getpid()}-{os.urandom(3).hex()}"
    codec = Codec(
        config.key_bytes, config.cluster, lambda: node, time.time,
        max_bytes=config.max_message_bytes, max_age_s=config.max_message_age_s,
    )  # fmt: skip
    done = asyncio.Event()

    async def answer(msg: Any) -> None:
        try:
            reply = codec.decode(msg.data)
        except Rejected:
            result.rejected += 1
            return
        if reply.kind == "reply" and isinstance(reply.payload.get("healthy"), bool):
            result.answers[reply.node] = reply.payload
            if result.complete:
                done.set()

    try:
        inbox = nc.new_inbox()
        await nc.subscribe(inbox, cb=answer)
        subject = f"sessionkeeper.{config.cluster}.all"
        await nc.publish(subject, codec.encode("health", {}), reply=inbox)
        with contextlib.suppress(TimeoutError):  # the answers so far are the answer
            await asyncio.wait_for(done.wait(), timeout_s)
    finally:
        await nc.close()
    return result
