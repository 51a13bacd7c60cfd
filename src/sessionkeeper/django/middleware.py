"""The Django adapter's middleware (503 on a store outage), system checks and app config
(the session middleware that renders the cookie is in cookies.py)."""

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
from ..tracking import Tracking
from . import SessionStore
from ._process import _request_failed, get_manager, tracking_from_settings


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
    errors.extend(_middleware_checks(options.get("tracking")))
    return errors


_DJANGOS = "django.contrib.sessions.middleware.SessionMiddleware"
_OURS = "sessionkeeper.django.SessionMiddleware"


def _middleware_checks(tracking: Any) -> list[checks.CheckMessage]:
    if getattr(settings, "SESSION_ENGINE", "") != "sessionkeeper.django":
        return []
    middleware = list(getattr(settings, "MIDDLEWARE", []))
    if _DJANGOS not in middleware and _OURS not in middleware:
        return [
            checks.Warning(
                f"SESSION_ENGINE is sessionkeeper.django but neither {_OURS} nor Django's "
                "SessionMiddleware is in MIDDLEWARE: request.session will not exist",
                id="sessionkeeper.W002",
            )
        ]
    if (
        _DJANGOS in middleware
        and isinstance(tracking, Tracking)
        and _cookie_of(tracking) != _cookie_of(tracking_from_settings())
    ):
        return [
            checks.Warning(
                "SESSIONKEEPER's TRACKING describes another cookie than the SESSION_COOKIE_* "
                "settings Django's SessionMiddleware renders (name, scope, flags or "
                "Partitioned): browsers get Django's",
                hint=f"use {_OURS!r} in MIDDLEWARE instead of {_DJANGOS!r}",
                id="sessionkeeper.W003",
            )
        ]
    return []


def _cookie_of(t: Tracking) -> tuple[Any, ...]:
    """What of a Tracking Django's own middleware renders from its settings (Max-Age aside)."""
    samesite = t.cookie_samesite.lower() if t.cookie_samesite else None
    return (t.uses_cookie, t.cookie_name, t.cookie_path, t.cookie_domain, t.cookie_httponly,
            samesite, t.cookie_secure, t.cookie_partitioned)  # fmt: skip


class SessionKeeperConfig(AppConfig):
    """Add ``"sessionkeeper.django.SessionKeeperConfig"`` to ``INSTALLED_APPS`` for the checks."""

    name = "sessionkeeper"
    label = "sessionkeeper"
    verbose_name = "sessionkeeper"
    default_auto_field = "django.db.models.AutoField"
