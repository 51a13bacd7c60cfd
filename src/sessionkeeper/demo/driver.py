"""Simulated shoppers: concurrent users sending HTTP requests to the demo nodes.

Routing is what an affinity load balancer does: a user's request goes to the node named in its
session id's suffix; when that node is down, to another live node (the new node loads the
session from the store: a failover). A node that is being stopped gracefully is drained: its
users wait until it has exited, and so has flushed, before moving on — a load balancer that sent
them elsewhere at once could let the new node read the store before the old one's final flush.

Every cart update carries a per-user sequence number; each one acknowledged (a 200 answer) is
recorded with the node that served it and when, for :mod:`.report` to check against the store.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

from .. import ids
from .cluster import HTTP_TIMEOUT_S, Cluster, Node, State

COOKIE_NAME = "sessionid"
DRAIN_WAIT_S = 30.0


@dataclass(frozen=True)
class Ack:
    """One acknowledged cart update."""

    user: int
    seq: int
    node: str
    at_s: float  # seconds since the run started, when its answer was read
    sent_s: float = -1.0  # when the request was sent: the node answered between the two


@dataclass
class Counters:
    requests: int = 0  # sent, whatever their fate
    ok: int = 0
    errors: int = 0  # no answer (node died), or a 5xx
    changed: int = 0  # acknowledged requests that changed the session
    failovers: int = 0  # served by a node other than the one the id named
    rerouted: int = 0  # the id's node was down when the request was routed


@dataclass
class User:
    index: int
    session_id: str | None = None
    next_seq: int = 1
    acks: list[Ack] = field(default_factory=list)

    @property
    def node(self) -> str | None:
        parsed = ids.parse(self.session_id)
        return parsed[1] if parsed else None

    @property
    def backups(self) -> tuple[str, ...]:
        """The nodes after the owner in the id (``<token>.<owner>.<backup>``)."""
        route = ids.parse_route(self.session_id)
        return route[1][1:] if route else ()

    @property
    def token(self) -> str | None:
        parsed = ids.parse(self.session_id)
        return parsed[0] if parsed else None


class Shoppers:
    """``n`` users shopping on ``cluster`` from their own threads until :meth:`stop`."""

    def __init__(self, cluster: Cluster, n: int, started_at: float, seed: int = 1) -> None:
        self.cluster = cluster
        self.users = [User(i) for i in range(n)]
        self.started_at = started_at
        self.counters = Counters()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._shop,
                args=(u, random.Random(seed * 1000 + u.index)),
                name=f"user-{u.index}",
                daemon=True,
            )
            for u in self.users
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=HTTP_TIMEOUT_S + DRAIN_WAIT_S)

    def now_s(self) -> float:
        return time.monotonic() - self.started_at

    def snapshot(self) -> Counters:
        with self._lock:
            return Counters(**vars(self.counters))

    def users_on(self, node: str) -> int:
        return sum(1 for u in self.users if u.node == node)

    # -- one user -------------------------------------------------------------------------

    def _shop(self, user: User, rnd: random.Random) -> None:
        while not self._stop.is_set() and user.session_id is None:
            self._send(user, "POST", f"/login?user=shopper-{user.index}")
            self._stop.wait(0.05)
        while not self._stop.is_set():
            r = rnd.random()
            if r < 0.75:
                seq = user.next_seq
                user.next_seq += 1
                item = rnd.choice(("apple", "pear", "fig", "plum"))
                sent_s = self.now_s()
                body = self._send(user, "POST", f"/cart/add?item={item}&seq={seq}")
                if body is not None:
                    ack = Ack(user.index, seq, body["node"], self.now_s(), sent_s)
                    with self._lock:
                        user.acks.append(ack)
            elif r < 0.92:
                self._send(user, "GET", "/cart")
            else:
                self._send(user, "POST", "/checkout")
            self._stop.wait(rnd.uniform(0.01, 0.04))

    def _route(self, user: User) -> Node | None:
        node = self.cluster.by_name.get(user.node or "")
        if node is not None and node.state is State.STOPPING:
            deadline = time.monotonic() + DRAIN_WAIT_S
            while node.state is State.STOPPING and time.monotonic() < deadline:
                time.sleep(0.02)
        if node is not None and node.state is State.UP:
            return node
        live = self.cluster.live()
        if not live:
            return None
        if node is not None:
            with self._lock:
                self.counters.rerouted += 1
        # Like the balancers in deploy/: the backups the id names (replication) come first.
        for name in user.backups:
            backup = self.cluster.by_name.get(name)
            if backup is not None and backup.state is State.UP:
                return backup
        return live[user.index % len(live)]

    def target_port(self, user: User) -> int | None:
        """The port ``user``'s next request goes to, or ``None`` when no node is up. A subclass
        can send every request through a load balancer instead (``tools.chaos``)."""
        node = self._route(user)
        return node.port if node is not None else None

    def answered(self, user: User, method: str, path: str, status: int) -> None:
        """Called after every request with its status (0: no answer). Does nothing here."""

    def _send(self, user: User, method: str, path: str) -> dict[str, Any] | None:
        """One request; the JSON body when it was answered 200, else ``None``."""
        port = self.target_port(user)
        if port is None:
            self._stop.wait(0.1)
            return None
        presented = user.session_id
        headers = {"Cookie": f"{COOKIE_NAME}={presented}"} if presented else {}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_S)
        try:
            conn.request(method, path, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            status, set_cookie = resp.status, resp.getheader("Set-Cookie")
        except (OSError, http.client.HTTPException):
            status, raw, set_cookie = 0, b"", None
        finally:
            conn.close()
        self.answered(user, method, path, status)
        with self._lock:
            self.counters.requests += 1
            if status == 0 or status >= 500:
                self.counters.errors += 1
                return None
            if set_cookie:
                cookie: SimpleCookie = SimpleCookie(set_cookie)
                if COOKIE_NAME in cookie and cookie[COOKIE_NAME].value:
                    user.session_id = cookie[COOKIE_NAME].value
            if status != 200:
                return None
            body: dict[str, Any] = json.loads(raw)
            self.counters.ok += 1
            if method == "POST":
                self.counters.changed += 1
            parsed = ids.parse(presented)
            if parsed is not None and parsed[1] != body["node"]:
                self.counters.failovers += 1
            return body

    def acks(self) -> list[Ack]:
        with self._lock:
            return [a for u in self.users for a in u.acks]
