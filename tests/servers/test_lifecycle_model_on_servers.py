"""The lifecycle state machine (tests/core/lifecycle_model.py) on PostgreSQL, MariaDB and Redis,
with fewer examples than on MemoryStore and SQLite. Each example gets its own table or key
prefix (the stores are opened per node, as separate processes would), dropped afterwards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import sessionkeeper as sk
from sessionkeeper.stores import Store
from tests.core.lifecycle_model import DEFECTS, Case, run
from tests.core.lifecycle_stores import Plumbing, url_plumbing
from tests.core.test_lifecycle_model import REASONS

from .conftest import FIXTURE_OF, SERVERS, drop, target_options

EXAMPLES = 8
STEPS = 20

#: Cases that pass on today's code (see tests/core/test_lifecycle_model.py for the ones that
#: fail, and why): an immediate and a deferred policy, with and without outages.
CASES = {
    "end-of-request-updated-up": (sk.EndOfRequest(), "updated", False),
    "on-attribute-accessed-up": (sk.OnAttribute(), "accessed", False),
    "after-updates-updated-outages": (sk.AfterUpdates(3), "updated", True),
    "manual-accessed-outages": (sk.Manual(), "accessed", True),
    # Where findings A (contents="all" merges) and 16 (destroyed events) showed.
    "end-of-request-all-up": (sk.EndOfRequest(), "all", False),
    "time-based-updated-up": (sk.TimeBased(interval_s=10), "updated", False),
    "after-requests-updated-up": (sk.AfterRequests(3), "updated", False),  # finding C
}
#: Cases today's code fails on MemoryStore and SQLite, to show the defects are the core's, on
#: every store (strict=False: a few examples may not reach them).
FAILING: dict[str, tuple[tuple[sk.WritePolicy, str, bool], str]] = {}


def server_plumbing(kind: str, url: str) -> Callable[[], Plumbing]:
    """A fresh prefix per example, its tables or keys dropped when the example ends."""

    def make() -> Plumbing:
        options: dict[str, Any] = target_options(kind)
        options.pop("retry")  # the plumbing's own: two attempts, no sleeping
        cls: type[Store]
        if kind == "redis":
            from sessionkeeper.stores.redis import RedisStore

            cls = RedisStore
        else:
            from sessionkeeper.stores.sql import SqlStore

            cls = SqlStore
        prefix = {k: options[k] for k in ("key_prefix", "table_prefix") if k in options}
        return url_plumbing(cls, url, lambda: drop(kind, url, prefix), **options)

    return make


def params() -> list[object]:
    every = frozenset(DEFECTS)  # the passing cases step around every known defect
    out: list[object] = [pytest.param(case, *CASES[case], every, id=case) for case in CASES]
    for case, (spec, defect) in FAILING.items():
        mark = pytest.mark.xfail(strict=False, reason=REASONS[defect])
        out.append(pytest.param(case, *spec, frozenset(DEFECTS) - {defect}, id=case, marks=mark))
    return out


@pytest.mark.parametrize("kind", SERVERS)
@pytest.mark.parametrize(("case", "policy", "contents", "outages", "skip"), params())
def test_lifecycle_on_server(
    kind: str,
    case: str,
    policy: sk.WritePolicy,
    contents: str,
    outages: bool,
    skip: frozenset[str],
    request: pytest.FixtureRequest,
) -> None:
    url: str = request.getfixturevalue(FIXTURE_OF[kind])
    plumbing = server_plumbing(kind, url)
    run(
        Case(policy, plumbing, contents=contents, outages=outages, skip=skip),
        EXAMPLES,
        steps=STEPS,
        shrink=case in CASES,
    )
