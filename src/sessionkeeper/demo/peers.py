"""The demo with memory-to-memory replication (``sessionkeeper demo --replication nats://...``).

The nodes copy every session to a backup in another node's memory over NATS. Without ``--store``
they keep no database at all (each node's store is its own ``memory://``), so the check cannot
read the store after the nodes stop: it reads each shopper's cart from the live nodes instead,
once every node answers that each session it owns has its copies (``/_replication``), routing like
the balancers in ``deploy/``: to the owner the id names, then its backup, then any live node.

The replication counters (handoffs, takeovers, messages) live in each node's process and die with
it, so :class:`Tally` samples every node while it runs and just before it is stopped, and adds up
the last sample of each incarnation.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from .app import seqs_of
from .cluster import HTTP_TIMEOUT_S, Cluster, Node, State
from .driver import COOKIE_NAME, User
from .report import Found

HEALTH_WAIT_S = 30.0
COUNTERS = (
    "replication_handoffs",
    "replication_handoffs_received",
    "replication_takeovers",
    "replication_deltas",
    "replication_snapshots",
    "replication_fenced",
    "replication_unreplicated",
    "replication_repairs",
)


@dataclass(frozen=True)
class Peers:
    """What replication did during a demo run, summed over every node's incarnations."""

    counts: dict[str, int]
    owned: int  # sessions owned by the live nodes at the end
    copies: int  # owned sessions plus backup copies held, at the end
    healthy: bool  # every live node answered healthy before the check

    @property
    def copies_per_session(self) -> float:
        return self.copies / self.owned if self.owned else 0.0

    @property
    def messages(self) -> int:
        return self.counts.get("replication_deltas", 0) + self.counts.get(
            "replication_snapshots", 0
        )


class Tally:
    """The last replication counters seen of each node incarnation (name, start number)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int], dict[str, int]] = {}
        self._lock = threading.Lock()

    def sample(self, node: Node) -> None:
        """Read ``node``'s counters now; a node that does not answer keeps its last sample."""
        if node.state is not State.UP:
            return
        with contextlib.suppress(OSError, ValueError):
            stats = node.stats()
            with self._lock:
                self._seen[(node.name, node.starts)] = {k: int(stats.get(k, 0)) for k in COUNTERS}

    def sample_all(self, cluster: Cluster) -> None:
        for node in cluster.live():
            self.sample(node)

    def totals(self) -> dict[str, int]:
        with self._lock:
            return {k: sum(s.get(k, 0) for s in self._seen.values()) for k in COUNTERS}


def wait_healthy(cluster: Cluster, timeout_s: float = HEALTH_WAIT_S) -> bool:
    """Until every live node answers that each session it owns has its copies, and that no
    backup it replaced still holds one (the next housekeeping drops it): the copies counted
    then are the ones replication keeps."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if all(_settled(n.replication_health()) for n in cluster.live()):
                return True
        except (OSError, ValueError, KeyError):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)  # polling another process's answer, not waiting for time to pass


def _settled(health: dict[str, Any]) -> bool:
    return bool(health["healthy"]) and not health.get("retiring")


def _route(cluster: Cluster, user: User) -> list[Node]:
    named = [cluster.by_name[n] for n in (user.node, *user.backups) if n in cluster.by_name]
    return [n for n in [*named, *cluster.nodes] if n.state is State.UP]


def read_cart(cluster: Cluster, user: User) -> dict[str, Any] | None:
    """``GET /cart`` for ``user`` as a balancer would send it; the JSON body, or ``None``."""
    for node in dict.fromkeys(_route(cluster, user)):
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=HTTP_TIMEOUT_S)
        try:
            conn.request("GET", "/cart", headers={"Cookie": f"{COOKIE_NAME}={user.session_id}"})
            resp = conn.getresponse()
            raw, status = resp.read(), resp.status
            set_cookie = resp.getheader("Set-Cookie")
        except (OSError, http.client.HTTPException):
            continue  # the balancer's fallback: the next node
        finally:
            conn.close()
        if status != 200:
            return None
        cookie: SimpleCookie = SimpleCookie(set_cookie or "")
        if COOKIE_NAME in cookie and cookie[COOKIE_NAME].value:
            user.session_id = cookie[COOKIE_NAME].value  # a failover rewrote the suffix
        body: dict[str, Any] = json.loads(raw)
        return body
    return None


def read_nodes(cluster: Cluster, users: Sequence[User], store_writes: int = 0) -> Found:
    """What the live nodes hold for each shopper: the cart and orders a ``GET /cart`` shows."""
    seqs: dict[int, set[int]] = {}
    sessions = 0
    for user in users:
        body = read_cart(cluster, user) if user.session_id else None
        if body is None or body.get("user") is None:
            seqs[user.index] = set()
            continue
        sessions += 1
        seqs[user.index] = seqs_of(body)
    return Found(sessions, store_writes, seqs)


def peers_at_end(cluster: Cluster, tally: Tally, healthy: bool) -> Peers:
    """The counters, and the copies the live nodes hold now (owned + backups)."""
    tally.sample_all(cluster)
    owned = copies = 0
    for node in cluster.live():
        with contextlib.suppress(OSError, ValueError, KeyError):
            health = node.replication_health()
            owned += int(health["owned"])
            copies += int(health["owned"]) + int(health["backups_held"])
    return Peers(tally.totals(), owned, copies, healthy)
