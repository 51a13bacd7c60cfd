"""The Django adapter's process state: the one manager (built from the settings on first use,
rebuilt when they change) and, per request, the session stores it holds (ended on Django's
``request_finished`` signal)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core import signals
from django.core.signals import setting_changed

from ..config import manager_options
from ..errors import WriteRefused
from ..manager import SessionManager
from ..tracking import Tracking

if TYPE_CHECKING:
    from . import SessionStore

# -- the manager: one per process ----------------------------------------------------------------

_manager: SessionManager | None = None
_app_name: str | None = None  # SESSIONKEEPER["APP_NAME"], read once, reset with the manager
_manager_lock = threading.Lock()


def _options() -> tuple[str, dict[str, Any]]:
    raw: Mapping[str, Any] = getattr(settings, "SESSIONKEEPER", None) or {}
    app_name, options = manager_options(raw, source="SESSIONKEEPER")
    options.setdefault("timeout_s", float(settings.SESSION_COOKIE_AGE))
    options.setdefault("tracking", tracking_from_settings())
    return app_name or "default", options


def tracking_from_settings() -> Tracking:
    """The cookie Django's ``SESSION_COOKIE_*`` settings describe, as the manager's
    ``Tracking`` (what the manager renders, e.g. for an id it sets outside Django's middleware):
    ``SESSION_EXPIRE_AT_BROWSER_CLOSE`` makes a browser-session cookie, else ``Max-Age`` is
    ``SESSION_COOKIE_AGE``; ``SESSION_COOKIE_SAMESITE=False`` omits the attribute. Read when the
    manager is built: a later change applies from ``reset_manager()`` (not on every change, as
    ``override_settings`` in a test would close the manager under live stores)."""
    samesite = settings.SESSION_COOKIE_SAMESITE
    return Tracking(
        cookie_name=settings.SESSION_COOKIE_NAME,
        cookie_domain=settings.SESSION_COOKIE_DOMAIN,
        cookie_path=settings.SESSION_COOKIE_PATH,
        cookie_secure=bool(settings.SESSION_COOKIE_SECURE),
        cookie_httponly=bool(settings.SESSION_COOKIE_HTTPONLY),
        cookie_samesite=samesite or None,
        cookie_max_age_s=(
            None if settings.SESSION_EXPIRE_AT_BROWSER_CLOSE else int(settings.SESSION_COOKIE_AGE)
        ),
    )


def get_manager() -> SessionManager:
    """This process's manager, built from ``settings.SESSIONKEEPER`` on first use."""
    global _manager
    if _manager is None:
        with _manager_lock:
            if _manager is None:
                _manager = SessionManager(**_options()[1])
    return _manager


def app_name() -> str:
    global _app_name
    name = _app_name
    if name is None:
        name = _app_name = _options()[0]
    return name


_cookie_tracking: Tracking | None = None
#: The settings whose change the session middleware's cookie follows at once.
_COOKIE_SETTINGS = frozenset(
    ("SESSIONKEEPER", "SESSION_COOKIE_AGE", "SESSION_EXPIRE_AT_BROWSER_CLOSE")
)


def cookie_tracking() -> Tracking:
    """The cookie ``sessionkeeper.django.SessionMiddleware`` reads and renders: ``SESSIONKEEPER``'s
    ``TRACKING`` when given, else the ``SESSION_COOKIE_*`` settings as they are now, the same
    Tracking the manager is built with. Unlike the manager's, it follows a changed setting
    (``override_settings``) at once: rebuilding it closes nothing."""
    global _cookie_tracking
    tracking = _cookie_tracking
    if tracking is None:
        tracking = _cookie_tracking = _options()[1]["tracking"]
    return tracking


def _forget_cookie_tracking(*, setting: str = "", **kwargs: Any) -> None:
    global _cookie_tracking
    if setting in _COOKIE_SETTINGS or setting.startswith("SESSION_COOKIE_"):
        _cookie_tracking = None


setting_changed.connect(_forget_cookie_tracking, dispatch_uid="sessionkeeper.django.cookie")


def reset_manager(**kwargs: Any) -> None:
    """Close the manager; the next use builds one from the settings (on ``SESSIONKEEPER``
    changes, e.g. ``override_settings`` in tests)."""
    global _manager, _app_name
    if kwargs.get("setting") not in (None, "SESSIONKEEPER", "SESSION_COOKIE_AGE"):
        return
    with _manager_lock:
        old, _manager = _manager, None
        _app_name = None
    if old is not None:
        old.close()


setting_changed.connect(reset_manager, dispatch_uid="sessionkeeper.django.reset_manager")

# -- which sessions the current request holds ----------------------------------------------------


@dataclass(eq=False)
class _RequestState:
    stores: list[SessionStore] = field(default_factory=list)
    failed: bool = False


_request: ContextVar[_RequestState | None] = ContextVar("sessionkeeper_django", default=None)


def _request_started(**kwargs: Any) -> None:
    _request_finished()  # a server that never sent request_finished: end what was left
    _request.set(_RequestState())


def _request_failed(**kwargs: Any) -> None:
    state = _request.get()
    if state is not None:
        state.failed = True


def _request_finished(**kwargs: Any) -> None:
    state = _request.get()
    if state is None:
        return
    _request.set(None)
    for store in state.stores:
        # A refusal here is rolled back and counted; the response is already out (installed,
        # SessionUnavailableMiddleware makes the write in time to answer 503 instead).
        with contextlib.suppress(WriteRefused):
            store._end(ok=not (store.modified or state.failed))


signals.request_started.connect(_request_started, dispatch_uid="sessionkeeper.django.started")
signals.request_finished.connect(_request_finished, dispatch_uid="sessionkeeper.django.finished")
signals.got_request_exception.connect(_request_failed, dispatch_uid="sessionkeeper.django.failed")
