"""Starlette's own ``tests/middleware/test_session.py`` against ``sessionkeeper.asgi``.

The upstream module imports ``SessionMiddleware`` from ``starlette.middleware.sessions``; each test
here runs with that name, in the upstream module, replaced by ours, exactly as a user swaps the
import. The only addition is ``manager=``, which says where sessions are kept (a memory store and a
fake clock): every other argument is the test's own, Starlette's constructor names included.
``test_client_factory`` is Starlette's own fixture, from its ``tests/conftest.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest

import sessionkeeper as sk
from sessionkeeper.asgi import SessionMiddleware
from tests.conformance import sdist, tables

VERSION = "1.10.0"
ROOT = sdist.fetch(
    "starlette",
    VERSION,
    ("tests/conftest.py", "tests/types.py", "tests/middleware/test_session.py"),
)


class _TestClientFactory:
    """What ``tests/types.py`` defines at run time (it is a Protocol only for type checkers);
    stood in because that file imports ``httpx2``, which is not installed, and because our own
    ``tests`` package would shadow Starlette's."""

    __test__ = False


with sdist.stand_in_modules(
    {"tests.types": sdist.module_of("tests.types", TestClientFactory=_TestClientFactory)}
):
    _conftest = sdist.load(ROOT / "tests/conftest.py", "conformance_upstream.starlette.conftest")
    upstream = sdist.load(
        ROOT / "tests/middleware/test_session.py", "conformance_upstream.starlette.test_session"
    )

test_client_factory = _conftest.test_client_factory
globals().update(sdist.tests_of(upstream))

EXCLUDED: dict[str, str] = {
    "test_session_tracks_modification": "unit test of Starlette's own Session class, which "
    "the middleware swap does not replace",
}

XFAIL: dict[str, str] = {}
# Starlette runs its async tests on trio too when trio is installed (selenium, a dev dependency,
# brings it): the same causes apply there.
XFAIL |= {k.replace("[asyncio-", "[trio-"): v for k, v in XFAIL.items() if "[asyncio-" in k}


@pytest.fixture(autouse=True)
def sessionkeeper_middleware(monkeypatch: pytest.MonkeyPatch) -> Iterator[sk.SessionManager]:
    manager = sk.SessionManager(
        store="memory://", node="a", clock=sk.FakeClock(), housekeeping=False
    )
    ours = functools.partial(SessionMiddleware, manager=manager)
    monkeypatch.setattr(upstream, "SessionMiddleware", ours)
    yield manager
    manager.close()


def test_tables_name_upstream_tests() -> None:
    tables.check(set(sdist.tests_of(upstream)), EXCLUDED, XFAIL)
