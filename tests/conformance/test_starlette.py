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

# Every test here also fails on the first two causes; those named after them fail next.
_CTOR = "SessionMiddleware rejects Starlette's constructor names (secret_key=, max_age=...)"
_JSON = "Session is not a dict: JSONResponse({'session': request.session}) fails in json.dumps"

XFAIL: dict[str, str] = {
    "test_session": f"{_CTOR}; {_JSON}; without max_age Starlette sends Max-Age=14 days, ours "
    "a browser-session cookie",
    "test_partitioned_session[asyncio-False]": f"{_CTOR}; {_JSON}; clear() keeps the cookie "
    "and id (no Set-Cookie deleting it)",
    "test_partitioned_session[asyncio-True]": f"{_CTOR}; {_JSON}; Tracking has no Partitioned "
    "cookie attribute; clear() keeps the cookie and id",
    "test_session_expires": f"{_CTOR}; {_JSON}; max_age is not enforced server side: a session "
    "presented after its cookie expired still loads",
    "test_secure_session": f"{_CTOR}; {_JSON}",
    "test_session_cookie_subpath": f"{_CTOR}; {_JSON}; the cookie says Path=, Starlette's "
    "test matches its own spelling path=",
    "test_invalid_session_cookie": f"{_CTOR}; {_JSON}",
    "test_session_cookie": f"{_CTOR}; {_JSON}",
    "test_session_zero_max_age": f"{_CTOR}; {_JSON}",
    "test_domain_cookie": f"{_CTOR}; {_JSON}; the cookie says Domain=, Starlette's test "
    "matches its own spelling domain=",
    "test_set_cookie_only_on_modification": f"{_CTOR}; {_JSON}",
    "test_vary_cookie_on_access": f"{_CTOR}; {_JSON}; no Vary: Cookie on responses that used "
    "the session",
    "test_session_persists_mutations[asyncio-/inplace_update_session-data0-expected0]": f"{_CTOR}; "
    f"{_JSON}; Session is not a dict: session |= data raises TypeError",
    "test_session_persists_mutations[asyncio-/popitem_session-None-expected1]": f"{_CTOR}; "
    f"{_JSON}; Session is not a dict: popitem() removes the first key, dict's the last",
}
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
