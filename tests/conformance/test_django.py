"""Django's own session tests against ``SESSION_ENGINE = "sessionkeeper.django"``: the contract
every session backend passes (``SessionTestsMixin`` of ``tests/sessions_tests/tests.py``), run
against our ``SessionStore`` as django-redis runs it against its own, and ``SessionMiddlewareTests``
with our engine behind Django's ``SessionMiddleware``, then again behind ours
(``OurSessionMiddlewareTests``).

Each test gets a fresh manager (a memory store and a fake clock) through the ``SESSIONKEEPER``
setting. Neither class may touch Django's database (``databases`` is empty): our engine has none.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

if not settings.configured:
    # One Django configuration for the whole run, whichever module pytest imports first: the one
    # the adapter tests make (it includes SESSION_ENGINE and django.contrib.sessions).
    import tests.adapters.test_django  # noqa: F401

from django.contrib.sessions.backends.db import SessionStore as DatabaseSession
from django.test import SimpleTestCase, override_settings

import sessionkeeper as sk
from sessionkeeper import django as skd
from tests.conformance import sdist, tables

VERSION = "5.2.19"
ROOT = sdist.fetch("django", VERSION, ("tests/sessions_tests/",))

# ``tests.py`` imports ``.models`` only for CustomDatabaseSessionTests (the db backend with a custom
# model, not run here); loading the real models.py would need ``sessions_tests`` in INSTALLED_APPS.
_package = sdist.module_of("sessions_tests", __path__=[str(ROOT / "tests/sessions_tests")])
_models = sdist.module_of("sessions_tests.models", SessionStore=DatabaseSession)
_stand_ins = {"sessions_tests": _package, "sessions_tests.models": _models}
with sdist.stand_in_modules(_stand_ins):
    upstream = sdist.load(ROOT / "tests/sessions_tests/tests.py", "sessions_tests.tests")
# The same file again, its ``SessionMiddleware`` ours (``sessionkeeper.django.SessionMiddleware``,
# which renders the cookie through the manager's Tracking): the swap of the middleware setting.
_ours = sdist.module_of(
    "django.contrib.sessions.middleware", SessionMiddleware=skd.SessionMiddleware
)
with sdist.stand_in_modules({**_stand_ins, "django.contrib.sessions.middleware": _ours}):
    upstream_ours = sdist.load(ROOT / "tests/sessions_tests/tests.py", "sessions_tests.tests_ours")


def _config() -> dict[str, Any]:
    return {"STORE": "memory://", "NODE": "a", "CLOCK": sk.FakeClock(), "HOUSEKEEPING": False}


class _FreshManager:
    """Each test under its own manager, with our engine (before the upstream ``setUp``, which
    creates the session)."""

    def setUp(self) -> None:
        overridden = override_settings(
            SESSION_ENGINE="sessionkeeper.django", SESSIONKEEPER=_config()
        )
        overridden.enable()
        self.addCleanup(overridden.disable)  # type: ignore[attr-defined]
        super().setUp()  # type: ignore[misc]


class SessionStoreTests(_FreshManager, upstream.SessionTestsMixin, SimpleTestCase):
    backend = skd.SessionStore


class SessionMiddlewareTests(_FreshManager, upstream.SessionMiddlewareTests):
    databases: set[str] = set()


class OurSessionMiddlewareTests(_FreshManager, upstream_ours.SessionMiddlewareTests):
    """Django's middleware tests, with ``sessionkeeper.django.SessionMiddleware`` in its place."""

    databases: set[str] = set()


_DB_SESSION = "puts the db backend's DatabaseSession on the request itself"
_DB_MODEL = "reads the db backend's Session model (Session.objects.get)"
EXCLUDED: dict[str, str] = {
    "SessionMiddlewareTests::test_session_update_error_redirect": _DB_SESSION,
    "SessionMiddlewareTests::test_empty_session_saved": _DB_MODEL,
    "OurSessionMiddlewareTests::test_session_update_error_redirect": _DB_SESSION,
    "OurSessionMiddlewareTests::test_empty_session_saved": _DB_MODEL,
}

XFAIL: dict[str, str] = {}


def _loaded() -> set[str]:
    return {
        f"{cls.__name__}::{name}"
        for cls in (SessionStoreTests, SessionMiddlewareTests, OurSessionMiddlewareTests)
        for name in dir(cls)
        if name.startswith("test")
    }


def test_tables_name_upstream_tests() -> None:
    tables.check(_loaded(), EXCLUDED, XFAIL)
