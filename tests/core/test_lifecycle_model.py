"""The lifecycle state machine (lifecycle_model.py) on MemoryStore and SQLite.

The matrix (every policy; every ``contents`` on MemoryStore, ``"accessed"`` on SQLite; with and
without store outages) steps around the defects the machine found on today's code
(``lifecycle_model.DEFECTS``), so it checks everything else and must pass. Each defect then has
cases of its own that check it, xfail(strict=False) while it is open (a run may not reach it;
its shrunk example is a strict xfail in test_lifecycle_found.py). A fix makes them XPASS: then
drop the defect from ``DEFECTS``, from the skips below and from the xfail.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import sessionkeeper as sk

from .lifecycle_model import DEFECTS, Case, run
from .lifecycle_stores import Plumbing, memory_plumbing, sqlite_plumbing

POLICIES: dict[str, sk.WritePolicy] = {
    "end-of-request": sk.EndOfRequest(),
    "on-attribute": sk.OnAttribute(),
    "time-based": sk.TimeBased(interval_s=10),
    "after-updates": sk.AfterUpdates(3),
    "after-requests": sk.AfterRequests(3),
    "manual": sk.Manual(),
}
STORES: dict[str, tuple[Callable[[], Plumbing], int]] = {
    "memory": (memory_plumbing, 30),
    "sqlite": (sqlite_plumbing, 8),
}
CONTENTS = {"memory": ("updated", "accessed", "all"), "sqlite": ("accessed",)}

#: Defect -> the cases that check it: (policy, store, contents, outages).
CHECKS: dict[str, list[tuple[str, str, str, bool]]] = {}
REASONS: dict[str, str] = {}
assert REASONS.keys() == CHECKS.keys() == DEFECTS.keys()


def cases() -> list[object]:
    every = frozenset(DEFECTS)
    out: list[object] = []
    for policy in POLICIES:
        for store in STORES:
            for contents in CONTENTS[store]:
                for outages in (False, True):
                    name = f"{policy}-{store}-{contents}-{'outages' if outages else 'up'}"
                    out.append(pytest.param(policy, store, contents, outages, every, id=name))
    for defect, checks in CHECKS.items():
        mark = pytest.mark.xfail(strict=False, reason=REASONS[defect])
        for policy, store, contents, outages in checks:
            name = f"defect-{defect}-{policy}-{store}-{contents}-{'outages' if outages else 'up'}"
            skip = every - {defect}
            out.append(pytest.param(policy, store, contents, outages, skip, id=name, marks=mark))
    return out


@pytest.mark.parametrize(("policy", "store", "contents", "outages", "skip"), cases())
def test_lifecycle(
    policy: str, store: str, contents: str, outages: bool, skip: frozenset[str]
) -> None:
    plumbing, examples = STORES[store]
    case = Case(POLICIES[policy], plumbing, contents=contents, outages=outages, skip=skip)
    if skip == frozenset(DEFECTS):
        run(case, examples)
    else:  # checks an open defect: more examples to reach it, no shrinking (kept elsewhere)
        run(case, 4 * examples, shrink=False)
