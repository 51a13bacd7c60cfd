"""Flask: ``flask.session`` kept by a :class:`~sessionkeeper.SessionManager`.

    app = Flask(__name__)
    app.config["SESSIONKEEPER_STORE"] = "sqlite:///sessions.db"
    app.config["SESSIONKEEPER_WRITE"] = "time-based:10"
    SessionKeeper(app)  # or SessionKeeper() then .init_app(app)

Every ``SESSIONKEEPER_<NAME>`` key of ``app.config`` is passed to ``SessionManager`` as the keyword
``<name>`` (``SESSIONKEEPER_TIMEOUT_S`` -> ``timeout_s``); ``SESSIONKEEPER_APP_NAME`` names the
app scope (default: ``app.name``). The cookie follows Flask's ``SESSION_COOKIE_*`` settings.

Ordering: Flask calls ``save_session`` after the view and the ``after_request`` functions and before
the response is sent; the session's request ends there, so under ``EndOfRequest`` a response the
client sees is already in the store. A status of 500 or more rolls the request's changes back; so
does an exception that Flask propagates (testing, debug), through ``teardown_request``. Each request
is ended exactly once. A session that cannot be loaded, and a view whose ``rotate_id()``,
``invalidate()`` or ``sync()`` meets an outage (an error handler for ``UNAVAILABLE_ERRORS``), get
``503`` with ``Retry-After``.
A changed request whose write cannot be made durable (``WriteRefused``) has
its response replaced, in ``save_session``, by a ``503`` with ``Retry-After`` and no cookie.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import flask
from flask.sessions import NullSession, SessionInterface, SessionMixin
from flask.wrappers import Request, Response
from werkzeug.sansio.request import Request as WerkzeugRequest

from .config import manager_options
from .errors import UNAVAILABLE_ERRORS, WriteRefused
from .lifecycle import UNAVAILABLE_BODY, ActiveRequest
from .manager import SessionManager
from .session import Session
from .tracking import Tracking

CONFIG_PREFIX = "SESSIONKEEPER_"
_ACTIVE = "sessionkeeper.flask.active"
_UNAVAILABLE = "sessionkeeper.flask.unavailable"


class FlaskSession(SessionMixin):
    """What ``flask.session`` is: a ``SessionMixin`` over a sessionkeeper :class:`Session`.

    ``modified`` is true once the request sets or deletes a key; setting it to ``True`` after an
    in-place change (``session["cart"].append(x)``) marks the keys read in this request as changed,
    so they are written under ``contents="updated"`` too (``"accessed"`` catches them anyway).
    ``permanent`` also gives the session ``PERMANENT_SESSION_LIFETIME`` as its idle timeout.
    """

    def __init__(
        self, active: ActiveRequest, interface: SessionKeeperInterface, app: flask.Flask
    ) -> None:
        self.session: Session = active.session
        self.active = active
        self._interface = interface  # for the timeouts, read only when ``permanent`` changes
        self._app = app
        self._modified = False
        self.accessed = False
        self.permanent_changed = False  # the cookie's lifetime must be rewritten

    # -- the mapping, delegated ----------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.session[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.session[key] = value
        self._modified = True

    def __delitem__(self, key: str) -> None:
        del self.session[key]
        self._modified = True

    def __iter__(self) -> Iterator[str]:
        return iter(self.session)

    def __len__(self) -> int:
        return len(self.session)

    def __contains__(self, key: object) -> bool:
        return key in self.session

    def clear(self) -> None:
        if len(self.session):
            self.session.clear()
            self._modified = True

    def __repr__(self) -> str:
        return f"<FlaskSession {self.session!r}>"

    # -- Flask's attributes -----------------------------------------------------------------

    @property
    def new(self) -> bool:  # type: ignore[override]
        return self.active.is_new

    @property
    def modified(self) -> bool:
        return self._modified

    @modified.setter
    def modified(self, value: bool) -> None:
        if value:
            self.session.mark_modified()
        self._modified = value

    @property
    def permanent(self) -> bool:
        s = self.session  # no KeyError raised and caught for the usual, non-permanent session
        return bool(s["_permanent"]) if "_permanent" in s else False

    @permanent.setter
    def permanent(self, value: bool) -> None:
        if value == self.permanent:
            return
        self["_permanent"] = bool(value)
        self.permanent_changed = True
        if value:
            timeout_s = self._app.permanent_session_lifetime.total_seconds()
        else:
            timeout_s = self._interface.manager.timeout_for(self._interface.app_name)
        self.session.set_timeout(timeout_s)

    # -- sessionkeeper's operations ---------------------------------------------------------

    @property
    def id(self) -> str:
        return self.session.id

    def sync(self) -> None:
        self.session.sync()

    def rotate_id(self) -> None:
        """A new id for the same data: call it at login, against session fixation."""
        self.session.rotate_id()
        self._modified = True

    def invalidate(self) -> None:
        """End the session (logout); the cookie is deleted unless something is set again."""
        self.session.invalidate()
        self._modified = True


class UnavailableSession(NullSession):
    """Stands for a session that could not be loaded (store down): the request gets a 503."""


class SessionKeeperInterface(SessionInterface):
    """The ``SessionInterface`` that :class:`SessionKeeper` installs.

    The cookie carries only the id, so it is written when the id is new or changed, when
    ``permanent`` changed, and, for permanent sessions with ``SESSION_REFRESH_EACH_REQUEST``, on
    every response (to push its expiry forward); not on every modification as Flask's cookie
    sessions do.
    """

    null_session_class = NullSession

    def __init__(self, manager: SessionManager, app_name: str) -> None:
        self.manager = manager
        self.app_name = app_name
        # The options of the last cookie set (shared by the request threads: a stale read
        # costs one extra Set-Cookie at most).
        self._rendered: tuple[tuple[str, Any], ...] | None = None

    def open_session(self, app: flask.Flask, request: Request) -> SessionMixin | None:
        """Begins the request. A second open on the same request, as the test client's
        ``session_transaction()`` does (its context's push opens one, then it opens its own),
        first ends the one before, which nothing changed: it would hold the session against the
        second under ``serialize_access``, and leak that hold."""
        earlier = request.environ.get(_ACTIVE)
        if earlier is not None and not getattr(earlier, "ended", False):
            self.manager.lifecycle.end_request(earlier, ok=True)
        session_id = _session_cookie(request, self.get_cookie_name(app))
        try:
            active = self.manager.lifecycle.begin_request(self.app_name, session_id)
        except UNAVAILABLE_ERRORS:
            request.environ[_UNAVAILABLE] = self.manager.lifecycle.refuse()  # the 503's headers
            return UnavailableSession()
        request.environ[_ACTIVE] = active
        return FlaskSession(active, self, app)

    def should_set_cookie(self, app: flask.Flask, session: SessionMixin) -> bool:
        return session.permanent and bool(app.config["SESSION_REFRESH_EACH_REQUEST"])

    def save_session(self, app: flask.Flask, session: SessionMixin, response: Response) -> None:
        if not isinstance(session, FlaskSession):
            return
        try:
            self.manager.lifecycle.end_request(session.active, ok=response.status_code < 500)
        except WriteRefused:
            _replace_by_503(response, self.manager.lifecycle.refuse())
            return
        if session.accessed:
            _vary_cookie(response)
        action = self.manager.lifecycle.cookie_action(session.active)
        # The cookie's options are read only when a cookie is set or deleted: a cache hit whose
        # id did not change (most requests) touches no cookie.
        if action == "delete":
            response.delete_cookie(self.get_cookie_name(app), **self._cookie_options(app))
            _vary_cookie(response)
        elif session.session.created and (
            action == "set"
            or session.permanent_changed
            or self.should_set_cookie(app, session)
            or (session.modified and self._options_changed(app))
        ):
            max_age = app.permanent_session_lifetime if session.permanent else None
            options = self._cookie_options(app)
            response.set_cookie(self.get_cookie_name(app), session.id, max_age=max_age, **options)
            self._rendered = tuple(options.items())
            _vary_cookie(response)

    def _options_changed(self, app: flask.Flask) -> bool:
        """Whether the app's cookie settings (SESSION_COOKIE_*) differ from those of the last
        cookie set: a changed session then resends its cookie with the new ones. Flask resends on
        every change; a changed request whose settings and id did not change sends no cookie."""
        return tuple(self._cookie_options(app).items()) != self._rendered

    def _cookie_options(self, app: flask.Flask) -> dict[str, Any]:
        return {
            "domain": self.get_cookie_domain(app),
            "path": self.get_cookie_path(app),
            "secure": self.get_cookie_secure(app) or flask.request.is_secure,
            "partitioned": self.get_cookie_partitioned(app),
            "samesite": self.get_cookie_samesite(app),
            "httponly": self.get_cookie_httponly(app),
        }


def _replace_by_503(response: Response, headers: list[tuple[str, str]]) -> None:
    """Turn the application's response into the 503 of a refused write (its headers, cookies
    included, and its body dropped)."""
    response.status_code = 503
    response.headers.clear()
    response.set_data(UNAVAILABLE_BODY)
    for name, value in headers:
        response.headers[name] = value


def _vary_cookie(response: Response) -> None:
    """``response.vary.add("Cookie")``, with the same result; when the response has no ``Vary``
    yet (the usual case) it is set directly instead of through a parsed ``HeaderSet``."""
    headers = response.headers
    # A scan for the first Vary (what headers.get finds) without get's KeyError for a missing one.
    for key, value in headers:
        if key.lower() == "vary":
            if value:
                response.vary.add("Cookie")
                return
            break
    headers["Vary"] = "Cookie"


class SessionKeeper:
    """The Flask extension. ``manager`` (built from ``app.config`` when not given) keeps the
    sessions; one ``SessionKeeper`` may serve several apps, each with its own manager."""

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        manager: SessionManager | None = None,
        app_name: str | None = None,
    ) -> None:
        self.manager = manager
        self.app_name = app_name
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        manager = self.manager or manager_from_config(app.config)
        app_name = self.app_name or app.config.get(f"{CONFIG_PREFIX}APP_NAME") or app.name
        interface = SessionKeeperInterface(manager, app_name)
        app.session_interface = interface
        app.extensions["sessionkeeper"] = interface
        # First of all before_request functions: nothing should run on a session that is not there.
        app.before_request_funcs.setdefault(None, []).insert(0, _refuse_unavailable)
        app.teardown_request(_end_failed_request)
        # rotate_id(), invalidate() or sync() in a view, while the store is down: a 503, not a 500.
        for error in UNAVAILABLE_ERRORS:
            app.register_error_handler(error, _answer_unavailable)


_WERKZEUG_COOKIES = WerkzeugRequest.__dict__["cookies"]


def _session_cookie(request: Request, name: str) -> str | None:
    """``request.cookies.get(name)``, without parsing every cookie into a ``MultiDict`` when the
    header has no quoted value: then each ``;``-separated part is ``key[=value]`` with optional
    spaces and tabs around the key, the ``=`` and the value, and the first part whose key is
    ``name`` and whose key and value hold no space or tab is what werkzeug's ``parse_cookie``
    finds too (parts it cannot parse are skipped by both). Anything else goes to werkzeug."""
    if "cookies" in request.__dict__ or type(request).cookies is not _WERKZEUG_COOKIES:
        return request.cookies.get(name)  # already parsed, or a request class of its own
    header: str | None = request.environ.get("HTTP_COOKIE")
    if not header:
        return None
    if '"' in header:
        return request.cookies.get(name)
    for part in header.split(";"):
        key, eq, value = part.strip(" \t").partition("=")
        if eq:
            key = key.rstrip(" \t")
            value = value.lstrip(" \t")
            if " " in value or "\t" in value:
                continue
        if key == name and " " not in key and "\t" not in key:
            return value
    return None


def manager_from_config(config: flask.Config) -> SessionManager:
    """A ``SessionManager`` from the ``SESSIONKEEPER_*`` keys of a Flask config."""
    _, options = manager_options(config, prefix=CONFIG_PREFIX, source="Flask config")
    options.setdefault("tracking", tracking_from_config(config))
    return SessionManager(**options)


def tracking_from_config(config: Mapping[str, Any]) -> Tracking:
    """The cookie Flask's ``SESSION_COOKIE_*`` keys describe (Flask's defaults for absent ones),
    as the manager's ``Tracking``. ``SESSION_COOKIE_SECURE=False`` is Flask's "Secure when the
    request came over https" (``None`` here); no ``Max-Age``: Flask gives one only to a
    permanent session, per response."""
    return Tracking(
        cookie_name=config.get("SESSION_COOKIE_NAME", "session"),
        cookie_domain=config.get("SESSION_COOKIE_DOMAIN") or None,
        cookie_path=config.get("SESSION_COOKIE_PATH") or config.get("APPLICATION_ROOT") or "/",
        cookie_secure=True if config.get("SESSION_COOKIE_SECURE") else None,
        cookie_httponly=bool(config.get("SESSION_COOKIE_HTTPONLY", True)),
        cookie_samesite=config.get("SESSION_COOKIE_SAMESITE"),
        cookie_partitioned=bool(config.get("SESSION_COOKIE_PARTITIONED", False)),
    )


def _refuse_unavailable() -> Response | None:
    headers = flask.request.environ.get(_UNAVAILABLE)
    if headers is None:
        return None
    return flask.current_app.response_class(UNAVAILABLE_BODY, status=503, headers=headers)


def _answer_unavailable(exc: Exception) -> Response:
    """The 503 of a view whose session operation met an outage (one of ``UNAVAILABLE_ERRORS``);
    ``save_session`` then sees a status of 500 or more and rolls the request's changes back."""
    interface = flask.current_app.session_interface
    assert isinstance(interface, SessionKeeperInterface)  # init_app registered this handler
    headers = interface.manager.lifecycle.refuse()
    return flask.current_app.response_class(UNAVAILABLE_BODY, status=503, headers=headers)


def _end_failed_request(exc: BaseException | None) -> None:
    """A request whose ``save_session`` never ran (an exception Flask propagated) failed."""
    active = flask.request.environ.get(_ACTIVE)
    if active is None or getattr(active, "ended", False):
        return  # save_session ended it (almost every request): nothing to look up
    interface = flask.current_app.session_interface
    if isinstance(active, ActiveRequest) and isinstance(interface, SessionKeeperInterface):
        interface.manager.lifecycle.end_request(
            active, ok=False
        )  # a no-op when save_session ended it
