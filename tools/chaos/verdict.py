"""What one chaos run shows, and whether it is what each policy promises.

*Lost* updates are acknowledged (answered 200) cart updates that the store does not hold after every
node has stopped gracefully. The checks:

| check | policies |
|---|---|
| nothing lost at all | ``end-of-request``, ``on-attribute`` |
| nothing lost that the SIGTERMed node acknowledged (a graceful stop flushes) | every policy |
| nothing lost that a node other than the SIGKILLed one acknowledged | every policy |
| the SIGKILLed node lost only updates acknowledged in the last ``interval_s`` + 2 flush polls before the kill | ``time-based`` |
| at most what :func:`sessionkeeper.demo.report.allowed_losses` allows | the others |

Failed requests (a 5xx, or no answer) are counted by the fault they happened during (or up to 3 s
after): a 503 while PostgreSQL restarts or is cut off is expected for a session the node does not
cache; a 502 for a POST that was in flight on a node that died. *Staleness* is how long an
acknowledged update was only in a node's memory before the monitor first saw it in the store.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sessionkeeper.demo.driver import Ack
from sessionkeeper.demo.report import FLUSH_POLL_S, allowed_losses, in_crash_window
from sessionkeeper.policies import parse_policy

from .scenario import MONITOR_PERIOD_S, PolicyRun, Timeline

#: A table of figures: a label and one value per column, a row.
Table = list[tuple[str, list[str]]]

FAULT_NAMES = {
    "kill": "SIGKILL of a node",
    "term": "SIGTERM of a node",
    "pg-restart": "PostgreSQL restart",
    "cutoff": "database cut-off",
}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Figures:
    policy: str
    requests: int
    failed: int
    failed_by_fault: dict[str, int]  # fault kind (or "none") -> failed requests
    failed_503: int
    nginx_fallbacks: int
    failovers: int
    writes: int
    changed: int
    acknowledged: int
    lost: int
    lost_killed: int
    lost_terminated: int
    lost_other: int
    staleness_max_s: float
    staleness_max_outside_outage_s: float
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def _acks(run: PolicyRun) -> list[Ack]:
    return [a for u in run.users for a in u.acks]


def _which(run: PolicyRun, lost: Sequence[Ack], most: int = 5) -> str:
    """A few lost updates: user, sequence number, node, and when (relative to the SIGKILL)."""
    if not lost:
        return ""
    crash = run.crash.at_s if run.crash else 0.0
    shown = ", ".join(
        f"user {a.user} seq {a.seq} on {a.node} at {a.at_s:.2f} s ({a.at_s - crash:+.2f} s)"
        for a in lost[:most]
    )
    return f": {shown}"


def figures(run: PolicyRun) -> Figures:
    policy = parse_policy(run.policy)
    acks = _acks(run)
    lost = [a for a in acks if a.seq not in run.found.seqs.get(a.user, set())]
    killed = run.crash.node if run.crash else None
    lost_killed = [a for a in lost if a.node == killed]
    lost_terminated = [a for a in lost if a.node == run.terminated]
    lost_other = [a for a in lost if a.node not in (killed, run.terminated)]

    failed_by: dict[str, int] = {}
    for f in run.failures:
        covering = [w for w in run.windows if w.covers(f.at_s)]
        kind = max(covering, key=lambda w: w.start_s).kind if covering else "none"
        failed_by[kind] = failed_by.get(kind, 0) + 1

    outages = [w for w in run.windows if w.kind in ("pg-restart", "cutoff")]
    stale_all, stale_outside = 0.0, 0.0
    for a in acks:
        seen = run.first_seen.get((a.user, a.seq))
        if seen is None:
            continue
        stale = max(0.0, seen - a.at_s)
        stale_all = max(stale_all, stale)
        # Outside an outage: the update's way to the store did not cross one.
        if not any(a.at_s <= w.end_s + 3.0 and seen >= w.start_s for w in outages):
            stale_outside = max(stale_outside, stale)

    checks = [
        Check(
            "nothing the SIGTERMed node acknowledged was lost",
            not lost_terminated,
            f"{len(lost_terminated)} lost from {run.terminated}",
        ),
        Check(
            "nothing lost that another node than the SIGKILLed one acknowledged",
            not lost_other and (killed is not None or not lost_killed),
            f"{len(lost_other)} lost",
        ),
    ]
    loss = policy.max_loss(FLUSH_POLL_S)
    if loss.nothing:
        checks.append(
            Check("nothing lost at all", not lost, f"{len(lost)} lost{_which(run, lost)}")
        )
    elif math.isfinite(loss.seconds):
        window_s = loss.seconds
        late = [
            a
            for a in lost_killed
            if run.crash is None or not in_crash_window(a, run.crash, window_s)
        ]
        oldest = (
            max((run.crash.at_s - a.at_s for a in lost_killed), default=0.0) if run.crash else 0.0
        )
        checks.append(
            Check(
                f"the SIGKILL lost only updates acknowledged in its last {window_s:g} s",
                not late,
                f"{len(lost_killed)} lost, the oldest {oldest:.1f} s before the kill; "
                f"{len(late)} outside the window",
            )
        )
    else:
        allowed = allowed_losses(policy, acks, run.crash)
        checks.append(Check(f"at most {allowed} lost", len(lost) <= allowed, f"{len(lost)} lost"))
    checks.append(
        Check(
            "every node stopped by itself at the end (flushed)",
            run.clean_stop,
            "" if run.clean_stop else "a node had to be killed",
        )
    )
    return Figures(
        policy=run.policy,
        requests=run.requests,
        failed=len(run.failures),
        failed_by_fault=failed_by,
        failed_503=sum(1 for f in run.failures if f.status == 503),
        nginx_fallbacks=run.nginx_fallbacks,
        failovers=run.failovers,
        writes=run.found.writes,
        changed=run.changed,
        acknowledged=len(acks),
        lost=len(lost),
        lost_killed=len(lost_killed),
        lost_terminated=len(lost_terminated),
        lost_other=len(lost_other),
        staleness_max_s=stale_all,
        staleness_max_outside_outage_s=stale_outside,
        checks=checks,
    )


def rows(figs: Sequence[Figures]) -> Table:
    """The table, one row per figure, one column per policy."""

    def col(fn: Callable[[Figures], object]) -> list[str]:
        return [str(fn(f)) for f in figs]

    out: Table = [
        ("requests (through nginx)", col(lambda f: f.requests)),
        ("failed requests (5xx or no answer)", col(lambda f: f.failed)),
    ]
    for kind, label in FAULT_NAMES.items():
        out.append((f"  during the {label}", [str(f.failed_by_fault.get(kind, 0)) for f in figs]))
    out += [
        ("  outside any fault", col(lambda f: f.failed_by_fault.get("none", 0))),
        ("  of which 503 (store down, session not cached)", col(lambda f: f.failed_503)),
        ("nginx fallbacks to another node", col(lambda f: f.nginx_fallbacks)),
        ("failovers (served by another node)", col(lambda f: f.failovers)),
        ("store writes", col(lambda f: f.writes)),
        ("changing requests", col(lambda f: f.changed)),
        (
            "store writes per changing request",
            col(lambda f: f"{f.writes / f.changed:.2f}" if f.changed else "-"),
        ),
        ("updates acknowledged", col(lambda f: f.acknowledged)),
        ("lost updates", col(lambda f: f.lost)),
        ("  acknowledged by the SIGKILLed node", col(lambda f: f.lost_killed)),
        ("  acknowledged by the SIGTERMed node", col(lambda f: f.lost_terminated)),
        ("  acknowledged by the other nodes", col(lambda f: f.lost_other)),
        ("longest staleness", col(lambda f: f"{f.staleness_max_s:.1f} s")),
        (
            "longest staleness outside the DB outages",
            col(lambda f: f"{f.staleness_max_outside_outage_s:.1f} s"),
        ),
        ("result", col(lambda f: "OK" if f.ok else "FAIL")),
    ]
    return out


def text_table(figs: Sequence[Figures]) -> str:
    return format_text([f.policy for f in figs], rows(figs))


def markdown_table(figs: Sequence[Figures]) -> str:
    return format_markdown([f"`{f.policy}`" for f in figs], rows(figs))


def format_text(heads: Sequence[str], table: Table) -> str:
    """``table`` (a label and one value per column a row) under ``heads``, aligned for a
    terminal; a label indented by two spaces stays indented."""
    head = ("", list(heads))
    width = max(len(r[0]) for r in [head, *table])
    cols = [max(len(r[1][i]) for r in [head, *table]) for i in range(len(heads))]
    lines = []
    for label, values in [head, *table]:
        cells = "  ".join(v.rjust(w) for v, w in zip(values, cols, strict=True))
        lines.append(f"  {label:<{width}}  {cells}".rstrip())
    return "\n".join(lines)


def format_markdown(heads: Sequence[str], table: Table) -> str:
    """``table`` as a Markdown table, its figures right-aligned, indented labels kept so."""
    lines = ["| | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for label, values in table:
        name = label.strip()
        name = f"&nbsp;&nbsp;{name}" if label.startswith("  ") else name
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def failed_checks(figs: Sequence[Figures]) -> list[str]:
    return [f"{f.policy}: {c.name} ({c.detail})" for f in figs for c in f.checks if not c.ok]


def describe_timeline(t: Timeline) -> str:
    return (
        f"SIGKILL at {t.kill_at_s:g} s (restarted {t.restart_killed_after_s:g} s later), "
        f"SIGTERM at {t.term_at_s:g} s (restarted once it has exited), PostgreSQL restart at "
        f"{t.pg_restart_at_s:g} s, database cut off at {t.cutoff_at_s:g} s for {t.cutoff_s:g} s, "
        f"end at {t.duration_s:g} s; the staleness monitor polls every {MONITOR_PERIOD_S:g} s"
    )
