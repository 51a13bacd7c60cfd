"""Section: how many store writes each write policy makes on one fixed workload.

``sessions`` sessions each get one request per second of simulated time that changes the session
(a counter), spread evenly over the second, for ``seconds`` seconds. A :class:`FakeClock` moves the
time; housekeeping is off and ``manager.housekeep()`` is called once per simulated second, which is
what the housekeeping thread does at each poll. Writes are counted at the store (MemoryStore), so
they include every path: end of request, inside the attribute call, the flusher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import sessionkeeper as sk

from .report import BenchConfig, Section, SectionResult, Table, Verdict, ratio

TARGET_FEWER = 10.0
POLICIES: list[sk.WritePolicy] = [
    sk.EndOfRequest(),
    sk.OnAttribute(),
    sk.TimeBased(interval_s=1),
    sk.TimeBased(interval_s=10),
    sk.AfterUpdates(10),
    sk.AfterRequests(10),
    sk.Manual(),
]


@dataclass(frozen=True)
class Workload:
    sessions: int
    seconds: int


FULL = Workload(sessions=200, seconds=120)
QUICK = Workload(sessions=20, seconds=30)


@dataclass(frozen=True)
class Count:
    policy: sk.WritePolicy
    requests: int
    writes: int  # sessions written to the store during the workload
    touches: int  # access-time-only updates during the workload
    shutdown_writes: int  # dirty sessions written by close() after the workload


def run_policy(policy: sk.WritePolicy, workload: Workload) -> Count:
    clock = sk.FakeClock()
    store = sk.MemoryStore()
    manager = sk.SessionManager(store, write=policy, node="bench", clock=clock, housekeeping=False)
    ids: list[str | None] = [None] * workload.sessions
    # A power of two, so that every session's requests are exactly 1 s apart in float arithmetic
    # (with 1/sessions, rounding would put some a hair under 1 s and shift when writes fall due).
    step_s = 2.0 ** -math.ceil(math.log2(workload.sessions))
    rest_s = 1.0 - step_s * workload.sessions
    requests = 0
    for _ in range(workload.seconds):
        for i, sid in enumerate(ids):
            with manager.request("bench", sid) as session:
                session["hits"] = session.get("hits", 0) + 1
                ids[i] = session.id
            requests += 1
            clock.advance(step_s)
        clock.advance(rest_s)
        manager.housekeep()
    writes, touches = store.stats.sessions_written, store.stats.touches
    manager.close()
    hits = manager.stats()["cache_hits"]
    if hits != requests - workload.sessions:
        raise AssertionError(f"{policy.spec()}: {hits} cache hits for {requests} requests")
    return Count(policy, requests, writes, touches, store.stats.sessions_written - writes)


def run(config: BenchConfig) -> SectionResult:
    w = QUICK if config.quick else FULL
    result = SectionResult(
        "Store writes per write policy",
        f"{w.sessions} sessions, each receiving one request that changes it every simulated "
        f"second for {w.seconds} s (MemoryStore, `FakeClock`, `housekeep()` once a second). "
        "*store writes* are sessions written during the workload (the first request of each "
        "session creates it, which is a write under every policy); *at close* are the dirty "
        "sessions `close()` wrote afterwards. Ratios compare *store writes* with EndOfRequest's.",
    )
    counts = [run_policy(p, w) for p in POLICIES]
    baseline = next(c for c in counts if isinstance(c.policy, sk.EndOfRequest)).writes
    rows = [
        [
            c.policy.spec(),
            f"{c.requests:,}",
            f"{c.writes:,}",
            f"{c.writes / c.requests:.3f}",
            ratio(baseline / c.writes) if c.writes else "-",
            f"{c.touches:,}",
            f"{c.shutdown_writes:,}",
            c.policy.crash_window(),
        ]
        for c in counts
    ]
    result.tables.append(
        Table(
            [
                "policy",
                "requests",
                "store writes",
                "writes/request",
                "fewer than end-of-request",
                "touches",
                "at close",
                "a crash may lose",
            ],
            rows,
        )
    )
    tb = next(c for c in counts if c.policy == sk.TimeBased(interval_s=10))
    fewer = baseline / tb.writes
    steady = (baseline - w.sessions) / (tb.writes - w.sessions)
    result.notes.append(
        "One changing request per second and one write per 10 s make 10x this workload's "
        f"ceiling. TimeBased(10) sits on it: {tb.writes:,} writes are each session's creation, "
        "one per 10 s after it, and any the flusher found due at the very end of the window. "
        f"Without the {w.sessions:,} creation writes, which every policy makes, it is "
        f"{steady:.2f}x fewer than EndOfRequest."
    )
    result.verdicts.append(
        Verdict(
            f"TimeBased(10) makes at least {TARGET_FEWER:g}x fewer store writes than EndOfRequest",
            f"{fewer:.3f}x fewer ({tb.writes:,} vs {baseline:,}, creation writes included)",
            fewer >= TARGET_FEWER,
        )
    )
    return result


SECTION = Section("writes", run)
