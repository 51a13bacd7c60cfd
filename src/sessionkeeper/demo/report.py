"""The demo's verdict: what the store holds at the end, what the policy allows to be lost, and the
final table.

*Updates found* are read straight from the store after every node has stopped gracefully, so
only a crash can have lost anything. *Store writes* are the sum of the final version of every
user's session: each successful save raises a session's version by exactly one, whichever node
made it (the SIGKILLed one included, whose own counters died with it) and whenever (inside a
request, by the flusher, or in the shutdown flush). Access-time-only touches leave the version
alone and are not counted.

*Allowed losses* follow each policy's crash window (``policies.py``), counting only updates the
SIGKILLed node acknowledged before it died (the SIGTERMed node flushes, so it may lose nothing):

| policy | allowed |
|---|---|
| end-of-request, on-attribute | 0 |
| time-based:T | updates it acknowledged in the last T + 2 x flush poll seconds before the kill |
| after-updates:N, after-requests:N | per session, at most N - 1 of the updates it acknowledged |
| manual | every update it acknowledged (the demo never calls ``sync()``) |
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..policies import MaxLoss, WritePolicy
from ..replication import Replication
from ..serialization import make_serializer
from ..stores import Store
from .app import APP_NAME, seqs_of
from .driver import Ack, Counters, User

if TYPE_CHECKING:
    from .peers import Peers

#: The manager's default ``flush_poll_s``: the housekeeping thread's period.
FLUSH_POLL_S = 1.0


@dataclass(frozen=True)
class Crash:
    node: str
    at_s: float  # seconds since the run started


@dataclass(frozen=True)
class Found:
    """What the store holds for the demo's users at the end."""

    sessions: int  # live sessions of the shop in the store
    writes: int  # sum of the final versions of the users' sessions
    seqs: dict[int, set[int]]  # user index -> cart sequence numbers found


def read_store(store: Store, users: Sequence[User], now: float) -> Found:
    serializer = make_serializer("json")
    seqs: dict[int, set[int]] = {}
    writes = 0
    for user in users:
        stored = store.load(APP_NAME, user.token) if user.token else None
        if stored is None:
            seqs[user.index] = set()
            continue
        writes += stored.version
        attributes = {k: serializer.loads(v) for k, v in stored.attributes.items()}
        seqs[user.index] = seqs_of(attributes)
    counts = store.counts_by_app(now).get(APP_NAME)
    return Found(counts.live if counts else 0, writes, seqs)


def crash_loss(
    policy: WritePolicy, replication: Replication | None = None, durable_store: bool = True
) -> MaxLoss:
    """What the configuration may lose on one node's crash: the policy's ``max_loss()``, or,
    with replication, :meth:`Replication.max_loss` on top of it."""
    loss = policy.max_loss(FLUSH_POLL_S)
    if replication is None:
        return loss
    return replication.max_loss(loss, durable_store=durable_store)


def in_crash_window(ack: Ack, crash: Crash, window_s: float) -> bool:
    """Whether the crashed node acknowledged ``ack`` in the last ``window_s`` before it died.
    The node answered between the request's sending and the reading of its answer: a request
    sent before the kill began may have been answered before it, even when its answer was read
    a moment after (the restarted node's answers are to requests sent after)."""
    sent_s = ack.at_s if ack.sent_s < 0 else ack.sent_s
    return ack.node == crash.node and sent_s < crash.at_s and ack.at_s >= crash.at_s - window_s


def allowed_losses(
    policy: WritePolicy,
    acks: Sequence[Ack],
    crash: Crash | None,
    replication: Replication | None = None,
    durable_store: bool = True,
) -> int:
    """How many acknowledged updates the configuration's crash window (:func:`crash_loss`) may
    lose to the SIGKILL. The demo makes one update per request, so a bound on requests bounds
    updates."""
    loss = crash_loss(policy, replication, durable_store)
    if crash is None or loss.nothing:
        return 0
    recent = [a for a in acks if in_crash_window(a, crash, loss.seconds)]
    per_user = Counter(a.user for a in recent)
    cap = min(loss.updates, loss.requests)
    return sum(int(min(cap, n)) for n in per_user.values())


@dataclass(frozen=True)
class Outcome:
    requests: int
    sessions: int
    writes: int
    changed: int
    failovers: int
    rerouted: int
    errors: int
    acknowledged: int
    found: int
    lost: int
    allowed: int
    policy: WritePolicy
    peers: Peers | None = None  # with replication
    durable_store: bool = True

    @property
    def ok(self) -> bool:
        return self.lost <= self.allowed


def outcome(
    policy: WritePolicy,
    counters: Counters,
    acks: Sequence[Ack],
    found: Found,
    crash: Crash | None,
    replication: Replication | None = None,
    peers: Peers | None = None,
    durable_store: bool = True,
) -> Outcome:
    lost = sum(1 for a in acks if a.seq not in found.seqs.get(a.user, set()))
    return Outcome(
        requests=counters.requests,
        sessions=found.sessions,
        writes=found.writes,
        changed=counters.changed,
        failovers=counters.failovers,
        rerouted=counters.rerouted,
        errors=counters.errors,
        acknowledged=len(acks),
        found=len(acks) - lost,
        lost=lost,
        allowed=allowed_losses(policy, acks, crash, replication, durable_store),
        policy=policy,
        peers=peers,
        durable_store=durable_store,
    )


def table(o: Outcome) -> str:
    per_request = o.writes / o.requests if o.requests else 0.0
    saved = o.changed - o.writes
    saved_pct = f"{100 * saved / o.changed:.0f}% of" if o.changed else "of"
    where = "in the store" if o.peers is None else "on the nodes"
    allowed = ("allowed by the policy", f"{o.policy.spec()} may lose {o.policy.crash_window()}")
    if o.peers is not None:
        allowed = ("allowed", "by the policy and replication together (one node crashed)")
    rows = [
        ("requests", f"{o.requests}", f"{o.errors} unanswered (node down)"),
        ("sessions", f"{o.sessions}", f"live {where}"),
    ]
    if o.durable_store:
        rows += [
            ("store writes", f"{o.writes}", f"{per_request:.2f} per request"),
            ("writes saved", f"{saved}", f"{saved_pct} {o.changed} changing requests"),
        ]
    rows.append(("failovers", f"{o.failovers}", f"{o.rerouted} requests rerouted from a down node"))
    if o.peers is not None:
        rows += _peer_rows(o.peers, o.changed)
    rows += [
        ("updates acknowledged", f"{o.acknowledged}", ""),
        (f"updates {where}", f"{o.found}", _found_note(o)),
        ("lost updates", f"{o.lost}", ""),
        (allowed[0], f"{o.allowed}", allowed[1]),
        ("result", "OK" if o.ok else "FAIL", "" if o.ok else "more updates lost than allowed"),
    ]
    width = max(len(r[0]) for r in rows)
    num = max(len(r[1]) for r in rows)
    lines = [f"  {k:<{width}}  {v:>{num}}  {note}".rstrip() for k, v, note in rows]
    return "\n".join(lines)


def _found_note(o: Outcome) -> str:
    if o.peers is None:
        return "after a graceful stop of every node"
    return "read back from the live nodes" + ("" if o.peers.healthy else " (replication unhealthy)")


def _peer_rows(p: Peers, changed: int) -> list[tuple[str, str, str]]:
    c = p.counts
    per_change = f"{p.messages / changed:.2f} per changing request" if changed else ""
    return [
        ("copies per session", f"{p.copies_per_session:.2f}", f"{p.copies} copies of {p.owned}"),
        (
            "handoffs",
            f"{c.get('replication_handoffs_received', 0)}",
            "sessions a stopping node handed to their backup",
        ),
        (
            "takeovers",
            f"{c.get('replication_takeovers', 0)}",
            "sessions a backup took over from a dead owner",
        ),
        ("replication messages", f"{p.messages}", f"deltas and snapshots, {per_change}"),
    ]
