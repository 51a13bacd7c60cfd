"""What one replication run shows, and whether it is what the configuration promises.

The bound is the configuration's: :meth:`sessionkeeper.Replication.max_loss` on top of the
policy's ``max_loss()`` (:func:`sessionkeeper.demo.report.crash_loss`): what one node's crash may
lose. Both configurations of :mod:`.peers` replicate with ``ack="sync"``, so it is nothing, and
only one node is ever down. The checks:

| check | |
|---|---|
| at most what the configuration may lose (``max_loss()``: nothing for these two) | lost updates |
| no read failed while the NATS server was down | cached sessions keep being served |
| replication healthy at the end | each session has its backup again after every fault |
| the backups took over from the SIGKILLed node, the SIGTERMed node handed over | the counters |
| every node stopped by itself at the end | |

A changed request that no backup can acknowledge while NATS is down answers 503 when there is no
database (``memory``): it is counted with the failed requests of the NATS restart, and never
acknowledged, so it cannot be lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sessionkeeper.demo.report import allowed_losses, crash_loss
from sessionkeeper.policies import parse_policy
from sessionkeeper.replication import Replication

from .peers import PeerRun, PeerTimeline
from .verdict import Check, Table, format_markdown, format_text

FAULTS = {"kill": "SIGKILL of a node", "term": "SIGTERM of a node", "nats": "NATS restart"}


@dataclass(frozen=True)
class PeerFigures:
    name: str
    write: str
    store: str
    requests: int
    failed: int
    failed_by_fault: dict[str, int]
    failed_503: int
    failed_reads_nats: int
    nginx_fallbacks: int
    failovers: int
    takeovers: int
    handoffs: int
    messages: int
    copies_per_session: float
    writes: int
    changed: int
    acknowledged: int
    lost: int
    allowed: int
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def peer_figures(run: PeerRun) -> PeerFigures:
    policy = parse_policy(run.setup.write)
    replication = Replication()  # what the nodes run: the defaults, 1 replica, ack="sync"
    durable = run.setup.durable
    acks = [a for u in run.users for a in u.acks]
    lost = [a for a in acks if a.seq not in run.found.seqs.get(a.user, set())]
    allowed = allowed_losses(policy, acks, run.crash, replication, durable)
    bound = crash_loss(policy, replication, durable)
    failed_by: dict[str, int] = {}
    for f in run.failures:
        covering = [w for w in run.windows if w.covers(f.at_s)]
        kind = max(covering, key=lambda w: w.start_s).kind if covering else "none"
        failed_by[kind] = failed_by.get(kind, 0) + 1
    nats = [w for w in run.windows if w.kind == "nats"]
    failed_reads = sum(
        1 for f in run.failures if f.method == "GET" and any(w.covers(f.at_s) for w in nats)
    )
    c = run.peers.counts
    shown = ", ".join(f"user {a.user} seq {a.seq} on {a.node} at {a.at_s:.2f} s" for a in lost[:5])
    checks = [
        Check(
            "nothing lost" if bound.nothing else f"at most {allowed} lost",
            len(lost) <= allowed,
            f"{len(lost)} lost{': ' + shown if shown else ''}",
        ),
        Check("no read failed while NATS was down", failed_reads == 0, f"{failed_reads} failed"),
        Check(
            "replication healthy at the end",
            run.peers.healthy,
            f"{run.peers.copies} copies of {run.peers.owned} sessions",
        ),
        Check(
            "the backups took over from the SIGKILLed node",
            c.get("replication_takeovers", 0) > 0,
            f"{c.get('replication_takeovers', 0)} takeovers",
        ),
        Check(
            "the SIGTERMed node handed its sessions over",
            c.get("replication_handoffs_received", 0) > 0,
            f"{c.get('replication_handoffs_received', 0)} handed over",
        ),
        Check("every node stopped by itself at the end", run.clean_stop, ""),
    ]
    return PeerFigures(
        name=run.setup.name,
        write=run.setup.write,
        store="PostgreSQL" if durable else "none",
        requests=run.requests,
        failed=len(run.failures),
        failed_by_fault=failed_by,
        failed_503=sum(1 for f in run.failures if f.status == 503),
        failed_reads_nats=failed_reads,
        nginx_fallbacks=run.nginx_fallbacks,
        failovers=run.failovers,
        takeovers=c.get("replication_takeovers", 0),
        handoffs=c.get("replication_handoffs_received", 0),
        messages=run.peers.messages,
        copies_per_session=run.peers.copies_per_session,
        writes=run.found.writes,
        changed=run.changed,
        acknowledged=len(acks),
        lost=len(lost),
        allowed=allowed,
        checks=checks,
    )


def peer_rows(figs: Sequence[PeerFigures]) -> Table:
    def col(fn: Callable[[PeerFigures], object]) -> list[str]:
        return [str(fn(f)) for f in figs]

    def per_change(n: int, f: PeerFigures) -> str:
        return f"{n / f.changed:.2f}" if f.changed else "-"

    out: Table = [
        ("store", col(lambda f: f.store)),
        ("write policy", col(lambda f: f.write)),
        ("requests (through nginx)", col(lambda f: f.requests)),
        ("failed requests (5xx or no answer)", col(lambda f: f.failed)),
    ]
    for kind, label in FAULTS.items():
        out.append((f"  during the {label}", [str(f.failed_by_fault.get(kind, 0)) for f in figs]))
    out += [
        ("  outside any fault", col(lambda f: f.failed_by_fault.get("none", 0))),
        ("  of which 503 (no backup reachable)", col(lambda f: f.failed_503)),
        ("  reads failed while NATS was down", col(lambda f: f.failed_reads_nats)),
        ("nginx fallbacks to another node", col(lambda f: f.nginx_fallbacks)),
        ("failovers (served by another node)", col(lambda f: f.failovers)),
        ("takeovers (a backup became owner)", col(lambda f: f.takeovers)),
        ("handoffs (at the SIGTERM)", col(lambda f: f.handoffs)),
        ("replication messages per changing request", col(lambda f: per_change(f.messages, f))),
        ("copies per session at the end", col(lambda f: f"{f.copies_per_session:.2f}")),
        ("store writes", col(lambda f: f.writes)),
        ("changing requests", col(lambda f: f.changed)),
        ("updates acknowledged", col(lambda f: f.acknowledged)),
        ("lost updates", col(lambda f: f.lost)),
        ("allowed by max_loss()", col(lambda f: f.allowed)),
        ("result", col(lambda f: "OK" if f.ok else "FAIL")),
    ]
    return out


def peer_text_table(figs: Sequence[PeerFigures]) -> str:
    return format_text([f.name for f in figs], peer_rows(figs))


def peer_markdown_table(figs: Sequence[PeerFigures]) -> str:
    return format_markdown([f"`{f.name}`" for f in figs], peer_rows(figs))


def peer_failed_checks(figs: Sequence[PeerFigures]) -> list[str]:
    return [f"{f.name}: {c.name} ({c.detail})" for f in figs for c in f.checks if not c.ok]


def describe_peer_timeline(t: PeerTimeline) -> str:
    return (
        f"SIGKILL at {t.kill_at_s:g} s (restarted {t.restart_killed_after_s:g} s later), "
        f"SIGTERM at {t.term_at_s:g} s (restarted once it has exited), NATS server stopped at "
        f"{t.nats_stop_at_s:g} s for {t.nats_down_s:g} s, end at {t.duration_s:g} s"
    )
