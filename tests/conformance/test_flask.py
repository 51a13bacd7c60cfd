"""Flask's own session tests against ``sessionkeeper.flask``: the session tests of
``tests/test_basic.py`` and every other upstream test that goes through ``flask.session`` (or
``session_transaction``, or flashing, which is kept in the session).

Flask's tests get their app from the ``app`` fixture of its ``tests/conftest.py``; that fixture
builds it with the name ``Flask`` of the conftest module, which here makes the same app and installs
``SessionKeeper`` on it (a memory store and a fake clock per app). Every fixture of that conftest
(``client``, ``req_ctx``, its autouse leak detector...) is Flask's own, taken into this module.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import _pytest.monkeypatch
import flask
import pytest

import sessionkeeper as sk
from sessionkeeper.flask import SessionKeeper
from tests.conformance import sdist, tables

VERSION = "3.1.3"
ROOT = sdist.fetch("flask", VERSION, ("tests/",))

#: The upstream tests that go through the session, by file; ``Class::test`` for a method.
SELECTED: dict[str, tuple[str, ...]] = {
    "test_basic.py": (
        "test_session_accessed",
        "test_session_path",
        "test_session_using_application_root",
        "test_session_using_session_settings",
        "test_session_using_samesite_attribute",
        "test_missing_session",
        "test_session_secret_key_fallbacks",
        "test_session_expiration",
        "test_session_stored_last",
        "test_session_special_types",
        "test_session_cookie_setting",
        "test_session_vary_cookie",
        "test_session_refresh_vary",
        "test_flashes",
        "test_extended_flashing",
    ),
    "test_converters.py": ("test_context_available",),
    "test_helpers.py": (
        "TestStreaming::test_stream_keeps_session",
        "TestStreaming::test_async_view",
    ),
    "test_reqctx.py": (
        "TestGreenletContextCopying::test_greenlet_context_copying",
        "TestGreenletContextCopying::test_greenlet_context_copying_api",
        "test_session_error_pops_context",
        "test_session_dynamic_cookie_name",
    ),
    "test_session_interface.py": ("test_open_session_with_endpoint",),
    "test_signals.py": ("test_flash_signal",),
    "test_templating.py": ("test_standard_context",),
    "test_testing.py": (
        "test_redirect_session",
        "test_session_transactions",
        "test_session_transactions_no_null_sessions",
        "test_session_transactions_keep_context",
        "test_session_transaction_needs_cookies",
    ),
}

EXCLUDED: dict[str, str] = {
    "test_missing_session": "the built-in refuses to open a session without SECRET_KEY (it signs "
    "the cookie); ours needs no key",
    "test_session_secret_key_fallbacks": "itsdangerous signing: SECRET_KEY rotation and "
    "SECRET_KEY_FALLBACKS of the signed cookie",
    "test_session_transactions_no_null_sessions": "its own Flask() without SECRET_KEY: the "
    "built-in's NullSession, no session backend installed",
    "test_session_dynamic_cookie_name": "its own Flask() with a subclass of the built-in "
    "SecureCookieSessionInterface",
    "test_session_error_pops_context": "its own Flask() with a failing SessionInterface of its "
    "own: Flask's error handling, no session backend",
    "test_open_session_with_endpoint": "its own Flask() with a SessionInterface of its own: "
    "Flask's request matching, no session backend",
}

XFAIL: dict[str, str] = {}

_managers: list[sk.SessionManager] = []


def _flask_with_sessionkeeper(*args: Any, **kwargs: Any) -> flask.Flask:
    """What the upstream ``app`` fixture calls as ``Flask(...)``: the same app, with ours."""
    app = flask.Flask(*args, **kwargs)
    manager = sk.SessionManager(
        store="memory://", node="a", clock=sk.FakeClock(), housekeeping=False
    )
    _managers.append(manager)
    SessionKeeper(app, manager=manager)
    return app


_conftest = sdist.load(ROOT / "tests/conftest.py", "conformance_upstream.flask.conftest")
_conftest.Flask = _flask_with_sessionkeeper
# Flask 3.1.3's conftest reads ``_pytest.monkeypatch.notset``, which pytest 9 no longer has (the
# sentinel is ``NOTSET`` now): its own reference to that module gets the name back, nothing else.
_conftest.monkeypatch = types.SimpleNamespace(
    MonkeyPatch=pytest.MonkeyPatch, notset=_pytest.monkeypatch.NOTSET
)
globals().update(sdist.fixtures_of(_conftest))
# Its session-scoped autouse fixture clears FLASK_* variables until the session ends: here the
# same function clears them for this module only, so nothing changes for the rest of our suite.
_standard_os_environ = pytest.fixture(scope="module", autouse=True)(
    _conftest._standard_os_environ._get_wrapped_function()
)


def _take(file: str, names: tuple[str, ...]) -> dict[str, Any]:
    """The selected tests of one upstream file; a class keeps only its selected methods (and its
    marks, e.g. a skip when ``greenlet`` is not installed)."""
    module = sdist.load(ROOT / "tests" / file, f"conformance_upstream.flask.{file[:-3]}")
    taken: dict[str, Any] = sdist.tests_of(module, tuple(n for n in names if "::" not in n))
    by_class: dict[str, set[str]] = {}
    for name in names:
        if "::" in name:
            cls, method = name.split("::")
            by_class.setdefault(cls, set()).add(method)
    for cls_name, methods in by_class.items():
        upstream_cls = getattr(module, cls_name)
        others = {n: None for n in dir(upstream_cls) if n.startswith("test") and n not in methods}
        taken[cls_name] = type(cls_name, (upstream_cls,), others)
    return taken


for _file, _names in SELECTED.items():
    globals().update(_take(_file, _names))


@pytest.fixture(autouse=True)
def _close_managers() -> Iterator[None]:
    yield
    while _managers:
        _managers.pop().close()


def test_tables_name_upstream_tests() -> None:
    tables.check({n for names in SELECTED.values() for n in names}, EXCLUDED, XFAIL)
