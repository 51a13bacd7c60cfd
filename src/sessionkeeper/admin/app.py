"""``AdminConsole``: the console's WSGI application (pages, actions, authentication).

Every page but the login needs a logged-in console session (or ``Authorization: Bearer`` with
the token); every POST from a browser carries the console session's CSRF token, checked before
anything else. Sessions are named by their short hash only (:func:`.views.short_hash`), in
pages and URLs alike, and looked up by it here. Every action (log in and out, showing values,
invalidating) is written to the audit log first-hand: who, what, which session hash.

Invalidations go through the store's own delete (a tombstone, as a node's ``invalidate()``
leaves): nodes that cache the session stop trusting it as they learn of tombstones; a node's
next load of it finds none. Thread safe: the server may call it from several threads.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from ..clock import Clock, SystemClock
from ..serialization import Serializer, make_serializer
from ..stores import Store
from . import views
from .auth import Audit, Credentials, Login, Logins, Throttle
from .http import Request, Response
from .samples import Sampler, series, svg_chart

COOKIE = "skconsole"
Handler = Callable[..., Response]


class AdminConsole:
    def __init__(
        self,
        store: Store,
        credentials: Credentials,
        *,
        serializer: str | Serializer = "json",
        pickle_key: bytes | str | None = None,
        metrics_urls: Sequence[str] = (),
        audit_file: str | Path | None = None,
        tombstone_grace_s: float = 3600.0,
        page_size: int = 50,
        sample_interval_s: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self.credentials = credentials
        self.serializer = make_serializer(serializer, pickle_key=pickle_key)
        self.tombstone_grace_s = tombstone_grace_s
        self.page_size = page_size
        self.logins = Logins(self.clock)
        self.throttle = Throttle(self.clock)
        self.audit = Audit(self.clock, audit_file)
        self.hashes = views.Hashes(store)
        self.sampler = Sampler(store, self.clock, metrics_urls, interval_s=sample_interval_s)
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("sessionkeeper.admin", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._css = resources.files("sessionkeeper.admin").joinpath("static/admin.css").read_bytes()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("GET", re.compile(r"/static/admin\.css"), self._static),
            ("GET", re.compile(r"/login"), self._login_page),
            ("POST", re.compile(r"/login"), self._login),
            ("POST", re.compile(r"/logout"), self._logout),
            ("GET", re.compile(r"/"), self._overview),
            ("GET", re.compile(r"/apps/(?P<app>[^/]+)"), self._sessions),
            ("GET", re.compile(r"/apps/(?P<app>[^/]+)/sessions/(?P<h>[0-9a-f]{12})"), self._one),
            (
                "POST",
                re.compile(r"/apps/(?P<app>[^/]+)/sessions/(?P<h>[0-9a-f]{12})/invalidate"),
                self._invalidate,
            ),
            ("POST", re.compile(r"/apps/(?P<app>[^/]+)/owners/invalidate"), self._invalidate_owner),
        ]

    def close(self) -> None:
        self.sampler.stop()

    # -- WSGI ---------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        self.sampler.start()
        req = Request.from_environ(environ)
        return self._dispatch(req).send(start_response)

    def _dispatch(self, req: Request) -> Response:
        allowed = []
        for method, pattern, handler in self._routes:
            m = pattern.fullmatch(req.path)
            if m is None:
                continue
            if method != req.method:
                allowed.append(method)
                continue
            args = m.groupdict()  # PATH_INFO is already percent-decoded by the server
            if handler in (self._static, self._login_page, self._login):
                return handler(req, **args)
            who, login = self._who(req)
            if who is None:
                if req.method == "GET":
                    return Response.redirect(f"{req.root}/login")
                return self._refuse(req, 401, "Not logged in", "Log in first.")
            if req.method == "POST" and login is not None and not self._csrf_ok(req, login):
                self.audit.record(who, "refused-csrf", req.remote, path=req.path)
                return self._refuse(
                    req, 403, "Refused", "The form's CSRF token is missing or wrong."
                )
            return handler(req, who, login, **args)
        if allowed:
            r = self._refuse(req, 405, "Method not allowed", f"Use {', '.join(allowed)}.")
            r.headers.append(("Allow", ", ".join(allowed)))
            return r
        return self._refuse(req, 404, "Not found", "No such page.")

    def _who(self, req: Request) -> tuple[str | None, Login | None]:
        """The user, and their console session (``None`` for a bearer token: no cookie, so no
        cross-site request can carry it, and no CSRF token is needed)."""
        if req.authorization and self.credentials.check_bearer(req.authorization):
            return "token", None
        login = self.logins.get(req.cookies.get(COOKIE))
        if login is None or login.user is None:
            return None, None
        return login.user, login

    @staticmethod
    def _csrf_ok(req: Request, login: Login) -> bool:
        return hmac.compare_digest(req.form.get("csrf", "").encode(), login.csrf.encode())

    # -- rendering ------------------------------------------------------------------------------

    def _page(self, req: Request, template: str, login: Login | None, **context: Any) -> Response:
        html = self._env.get_template(template).render(
            root=req.root,
            user=login.user if login else None,
            csrf=login.csrf if login else "",
            store_name=self.store.describe(),
            message=context.pop("message", None) or (login.take_flash() if login else ""),
            **context,
        )
        return Response(body=html.encode("utf-8"))

    def _refuse(self, req: Request, status: int, title: str, detail: str) -> Response:
        login = self.logins.get(req.cookies.get(COOKIE))
        r = self._page(req, "message.html", login, title=title, detail=detail, message="")
        r.status = status
        return r

    def _static(self, req: Request) -> Response:
        return Response(body=self._css, content_type="text/css; charset=utf-8")

    # -- login ---------------------------------------------------------------------------------

    def _login_page(self, req: Request) -> Response:
        login = self.logins.get(req.cookies.get(COOKIE))
        sid = None
        if login is None:
            sid, login = self.logins.start()
        r = self._page(req, "login.html", Login(csrf=login.csrf))
        if sid is not None:
            r.set_cookie(COOKIE, sid, path=req.root or "/", secure=req.https)
        return r

    def _login(self, req: Request) -> Response:
        before = self.logins.get(req.cookies.get(COOKIE))
        user = req.form.get("user", "").strip()[:64] or "?"
        if before is None or not self._csrf_ok(req, before):
            self.audit.record(user, "refused-csrf", req.remote, path=req.path)
            return self._refuse(req, 403, "Refused", "The form's CSRF token is missing or wrong.")
        if not self.throttle.allowed(req.remote):
            self.audit.record(user, "login-throttled", req.remote)
            return self._refuse(req, 429, "Too many failed logins", "Try again later.")
        if not self.credentials.check_password(req.form.get("password", "")):
            self.throttle.failed(req.remote)
            self.audit.record(user, "login-failed", req.remote)
            r = self._page(req, "login.html", Login(csrf=before.csrf), message="Wrong password.")
            r.status = 401
            return r
        self.logins.end(req.cookies.get(COOKIE))
        sid, _ = self.logins.start(user)
        self.audit.record(user, "login", req.remote)
        r = Response.redirect(f"{req.root}/")
        r.set_cookie(COOKIE, sid, path=req.root or "/", secure=req.https)
        return r

    def _logout(self, req: Request, who: str, login: Login | None) -> Response:
        self.logins.end(req.cookies.get(COOKIE))
        self.audit.record(who, "logout", req.remote)
        r = Response.redirect(f"{req.root}/login")
        r.delete_cookie(COOKIE, path=req.root or "/")
        return r

    # -- pages ---------------------------------------------------------------------------------

    def _overview(self, req: Request, who: str, login: Login | None) -> Response:
        latest = self.sampler.sample()
        samples = self.sampler.samples()
        charts = {
            "sessions": svg_chart(series(samples, "sessions"), "live sessions (store)", ""),
            "writes": svg_chart(series(samples, "writes"), "store writes (nodes)", " /s"),
            "failovers": svg_chart(series(samples, "failovers"), "failovers (nodes)", " /s"),
        }
        counts = sorted(latest.counts.items())
        return self._page(
            req,
            "overview.html",
            login,
            counts=counts,
            total_live=sum(c.live for _, c in counts),
            total_expired=sum(c.expired for _, c in counts),
            charts=charts,
            samples=len(samples),
            interval_s=self.sampler.interval_s,
            metrics_urls=self.sampler.metrics_urls,
            nodes_up=latest.nodes_up,
        )

    def _sessions(self, req: Request, who: str, login: Login | None, app: str) -> Response:
        now = self.clock.time()
        owner = req.query.get("owner", "").strip() or None
        next_after = None
        if owner is not None:
            found = self.store.sessions_of(app, owner)
        else:
            after_hash = req.query.get("after", "")
            after = self.hashes.token(app, after_hash, scan=False) if after_hash else None
            found = self.store.list_sessions(app, after=after, limit=self.page_size + 1)
            if len(found) > self.page_size:
                found = found[: self.page_size]
                next_after = views.short_hash(app, found[-1].token)
        for s in found:
            self.hashes.remember(s)
        rows = [views.row(s, now) for s in found]
        return self._page(
            req, "sessions.html", login, app=app, owner=owner, rows=rows, next_after=next_after
        )

    def _one(self, req: Request, who: str, login: Login | None, app: str, h: str) -> Response:
        token = self.hashes.token(app, h)
        stored = self.store.load(app, token) if token is not None else None
        if stored is None:
            return self._refuse(req, 404, "No such session", f"No live session {h} in {app}.")
        show = req.query.get("values") == "1"
        if show:
            self.audit.record(who, "show-values", req.remote, app=app, session=h)
        return self._page(
            req,
            "session.html",
            login,
            app=app,
            r=views.row(stored, self.clock.time()),
            attributes=views.attributes(stored, self.serializer if show else None),
            values=show,
            serializer=self.serializer.name,
        )

    # -- actions -------------------------------------------------------------------------------

    def _invalidate(
        self, req: Request, who: str, login: Login | None, app: str, h: str
    ) -> Response:
        token = self.hashes.token(app, h)
        stored = self.store.load(app, token) if token is not None else None
        if token is None or stored is None:
            self.audit.record(who, "invalidate-missing", req.remote, app=app, session=h)
            return self._refuse(req, 404, "No such session", f"No live session {h} in {app}.")
        until = self.clock.time() + stored.timeout_s + self.tombstone_grace_s
        self.store.delete(app, token, tombstone_until=until)
        self.audit.record(who, "invalidate", req.remote, app=app, session=h)
        if login is not None:
            login.flash = f"Session {h} invalidated."
        return Response.redirect(f"{req.root}/apps/{quote(app, safe='')}")

    def _invalidate_owner(self, req: Request, who: str, login: Login | None, app: str) -> Response:
        owner = req.form.get("owner", "").strip()
        if not owner:
            return self._refuse(req, 400, "No owner", "Name the owner whose sessions to end.")
        ended = self.store.delete_owner(app, owner, grace_s=self.tombstone_grace_s)
        hashes = ",".join(views.short_hash(app, s.token) for s in ended)
        self.audit.record(
            who, "invalidate-owner", req.remote, app=app, owner=owner, sessions=hashes
        )
        if login is not None:
            login.flash = f"{len(ended)} sessions of {owner} invalidated."
        return Response.redirect(f"{req.root}/apps/{quote(app, safe='')}")
