"""The Django adapter's middleware (503 on a store outage), system checks and app config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.http import HttpRequest, HttpResponse

from ..config import MANAGER_OPTIONS, Settings
from ..errors import UNAVAILABLE_ERRORS, ConfigurationError, WriteRefused
from ..lifecycle import UNAVAILABLE_BODY
from . import SessionStore
from ._process import _request_failed, get_manager


class SessionUnavailableMiddleware:
    """Turns a session that cannot be loaded (the store is down and the session is not cached,
    or it stayed busy past ``access_wait_s``) into ``503`` with ``Retry-After``; so too a
    changed request whose write cannot be made durable (``WriteRefused``).

    Ordering: below ``SessionMiddleware``, it ends the request's hold (and so makes its write)
    as soon as the view answered below 500, while the response can still be replaced: the
    ``save()`` that ``SessionMiddleware`` calls afterwards then has nothing left to write, and a
    refused request is no longer ``modified``, so it gets no cookie."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        response = self.get_response(request)
        session = getattr(request, "session", None)
        if isinstance(session, SessionStore) and response.status_code < 500:
            try:
                session._end(ok=True)
            except WriteRefused:
                session._modified = False
                headers = get_manager().lifecycle.refuse()
                return HttpResponse(UNAVAILABLE_BODY, status=503, headers=headers)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        if not isinstance(exception, UNAVAILABLE_ERRORS):
            return None
        _request_failed()  # the view failed: its session changes are rolled back, not written
        return HttpResponse(UNAVAILABLE_BODY, status=503, headers=get_manager().lifecycle.refuse())


@checks.register("sessionkeeper")
def check_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    """``manage.py check``: a bad ``SESSIONKEEPER`` setting, caught without touching the store."""
    errors: list[checks.CheckMessage] = []
    raw = getattr(settings, "SESSIONKEEPER", None)
    if raw is not None and not isinstance(raw, Mapping):
        return [checks.Error("SESSIONKEEPER must be a dict", id="sessionkeeper.E001")]
    options = {str(k).lower(): v for k, v in (raw or {}).items()}
    for key in sorted(set(options) - MANAGER_OPTIONS - {"app_name"}):
        errors.append(
            checks.Error(
                f"SESSIONKEEPER has an unknown key {key.upper()!r}",
                hint=f"known: {', '.join(sorted(k.upper() for k in MANAGER_OPTIONS))}",
                id="sessionkeeper.E002",
            )
        )
    try:
        Settings(**{k: v for k, v in options.items() if k in MANAGER_OPTIONS})
    except (ConfigurationError, ValueError, TypeError) as exc:
        errors.append(checks.Error(f"SESSIONKEEPER: {exc}", id="sessionkeeper.E003"))
    store = options.get("store")
    if isinstance(store, str) and store.startswith("memory:"):
        errors.append(
            checks.Warning(
                "SESSIONKEEPER STORE is memory://: sessions do not survive the process and are "
                "not shared between workers",
                id="sessionkeeper.W001",
            )
        )
    if getattr(settings, "SESSION_ENGINE", "") == "sessionkeeper.django" and (
        "django.contrib.sessions.middleware.SessionMiddleware"
        not in getattr(settings, "MIDDLEWARE", [])
    ):
        errors.append(
            checks.Warning(
                "SESSION_ENGINE is sessionkeeper.django but Django's SessionMiddleware is not in "
                "MIDDLEWARE: request.session will not exist",
                id="sessionkeeper.W002",
            )
        )
    return errors


class SessionKeeperConfig(AppConfig):
    """Add ``"sessionkeeper.django.SessionKeeperConfig"`` to ``INSTALLED_APPS`` for the checks."""

    name = "sessionkeeper"
    label = "sessionkeeper"
    verbose_name = "sessionkeeper"
    default_auto_field = "django.db.models.AutoField"
