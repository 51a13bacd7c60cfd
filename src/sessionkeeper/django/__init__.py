"""Django: ``SESSION_ENGINE = "sessionkeeper.django"``, so ``request.session`` is kept by a manager.

    SESSION_ENGINE = "sessionkeeper.django"
    SESSIONKEEPER = {"STORE": "sqlite:///sessions.db", "WRITE": "time-based:10", "NODE": "a"}
    INSTALLED_APPS += ["sessionkeeper.django.SessionKeeperConfig"]   # system checks
    MIDDLEWARE = [..., "sessionkeeper.django.SessionMiddleware",     # in place of Django's
                  "sessionkeeper.django.SessionUnavailableMiddleware", ...]  # 503 on store outage

Every key of ``SESSIONKEEPER`` but ``APP_NAME`` is a ``SessionManager`` keyword (case-insensitive:
``"TIMEOUT_S"`` -> ``timeout_s``); ``timeout_s`` defaults to ``SESSION_COOKIE_AGE``. One manager
is built per process, on first use. ``SessionMiddleware`` (cookies.py) is Django's with the cookie
the manager's ``Tracking`` describes (``Partitioned``, ``SESSIONKEEPER["TRACKING"]``); Django's own
works too, rendering ``SESSION_COOKIE_*``. Either honours ``SESSION_SAVE_EVERY_REQUEST`` and
``SESSION_EXPIRE_AT_BROWSER_CLOSE``; the cookie value is the session id, ``<token>.<node>``, so it
carries affinity.

The request lifecycle: loading the session begins the manager's request; ``save()`` (which the
middleware calls before the response is sent, when the session was modified and the status is
below 500) ends it, and the write policy decides. A request that never saved is ended when Django
sends ``request_finished``: rolled back if it modified the session (the middleware skipped the save:
a 5xx, or a session emptied without ``flush()``) or raised, else ended normally. Outside a request
(a shell, a management command, a ``RequestFactory`` test, ``client.session``) a store works on a
private copy, as Django's db backend does (draft.py): no other store sees its changes, and none
is written, until ``save()`` writes them through the manager now (whatever the policy), into the
cache and the store; ``load()`` drops them and reads again. It holds nothing in between.

A store remembers the id it loaded: ``save()`` of a session that another context deleted
(``flush()``, ``delete()``) meanwhile raises ``UpdateError`` (Django answers
``SessionInterrupted``) and rolls the change back, rather than storing it under a new id.

``set_expiry(seconds)`` also sets the session's server-side idle timeout; a ``datetime`` or
``timedelta`` sets its absolute deadline (expiry.py). Async methods (``aget``, ``asave``...)
resolve a cached session on the event loop; store reads and writes run in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.utils.functional import cached_property
from django.utils.module_loading import import_string

from .. import ids
from ..lifecycle import ActiveRequest
from ..session import Session
from ._process import _request, app_name, get_manager, reset_manager
from .draft import Draft
from .expiry import ExpiryMixin

# -- the session engine -----------------------------------------------------------------------


# What pop()'s ``default`` is when none is given, as SessionBase's own: ``default=None`` is a default.
_NOT_GIVEN: Any = object()


class SessionStore(ExpiryMixin):
    """Django's ``SessionBase`` over a sessionkeeper :class:`Session`. Not thread safe, as every
    Django session object: one per request."""

    def __init__(self, session_key: str | None = None) -> None:
        # What SessionBase.__init__ does, but for its import_string(SESSION_SERIALIZER) in every
        # request: this engine never encodes with it, so ``serializer`` is resolved on first use.
        self._presented_key: str | None = None
        self._session_key = session_key
        self.accessed = False
        self._modified = False
        self._manager = get_manager()
        self._app = app_name()
        self._active: ActiveRequest | None = None
        # The token of the session this store loaded (or last gave a new id itself): another
        # context's invalidate() changes the shared Session's token under it.
        self._token: str | None = None
        self._loaded_id: str | None = None
        # Outside a request: the store's private copy of its session (draft.py).
        self._draft: Draft | None = None

    @cached_property
    def serializer(self) -> Any:
        return import_string(settings.SESSION_SERIALIZER)

    # -- the key: the session's id once loaded ------------------------------------------------

    def _loaded(self) -> Session | None:
        s = self.__dict__.get("_session_cache")
        return s if isinstance(s, Session) else None

    def _get_key(self) -> str | None:
        s = self.__dict__.get("_session_cache")  # _loaded(), inlined: read on every response
        if isinstance(s, Session):
            return s.id if s.created else None
        return self._presented_key

    def _set_key(self, value: str | None) -> None:
        self._presented_key = value if self._validate_session_key(value) else None

    session_key = property(_get_key)
    _session_key = property(_get_key, _set_key)

    @property
    def modified(self) -> bool:
        return self._modified

    @modified.setter
    def modified(self, value: bool) -> None:
        """``request.session.modified = True`` after an in-place change (``session["cart"]
        .append(x)``) also marks the keys read as changed, so ``contents="updated"`` writes them."""
        s = self._loaded() if value else None
        if s is not None:
            s.mark_modified()
        self._modified = value

    # Django's own mutators set ``modified`` too; they must not mark every key read as changed.

    def __setitem__(self, key: str, value: Any) -> None:
        self._session[key] = value
        self._modified = True

    def __delitem__(self, key: str) -> None:
        del self._session[key]
        self._modified = True

    def pop(self, key: str, default: Any = _NOT_GIVEN) -> Any:
        s = self._session
        self._modified = self._modified or key in s
        return s.pop(key) if default is _NOT_GIVEN else s.pop(key, default)

    def update(self, dict_: Mapping[str, Any]) -> None:
        self._session.update(dict_)
        self._modified = True

    async def aset(self, key: str, value: Any) -> None:
        (await self._aget_session())[key] = value
        self._modified = True

    async def apop(self, key: str, default: Any = _NOT_GIVEN) -> Any:
        s = await self._aget_session()
        self._modified = self._modified or key in s
        return s.pop(key) if default is _NOT_GIVEN else s.pop(key, default)

    async def aupdate(self, dict_: Mapping[str, Any]) -> None:
        (await self._aget_session()).update(dict_)
        self._modified = True

    # -- holding the session for a request -------------------------------------------------------

    def _get_session(self, no_load: bool = False) -> Session:
        self.accessed = True
        s = self.__dict__.get("_session_cache")  # _loaded(), inlined: every access comes here
        if not isinstance(s, Session):
            if _request.get() is None:
                draft = Draft(self._manager, self._app)
                return self._adopt_draft(draft, draft.read(self._presented_key))
            active = self._manager.lifecycle.begin_request(self._app, self._presented_key)
            s = self._adopt(active)
        return s

    _session = property(_get_session)

    def get(self, key: str, default: Any = None) -> Any:
        # SessionBase.get through the _session property, one call shorter: the view and the
        # middleware (``_session_expiry``, twice) call it in every request.
        return self._get_session().get(key, default)

    async def _aget_session(self, no_load: bool = False) -> Session:
        self.accessed = True
        s = self._loaded()
        if s is None and _request.get() is None:
            draft = Draft(self._manager, self._app)
            return self._adopt_draft(draft, await draft.aread(self._presented_key))
        if s is None:
            active = self._manager.lifecycle.begin_cached(self._app, self._presented_key)
            if active is None:
                active = await asyncio.to_thread(
                    self._manager.lifecycle.begin_request, self._app, self._presented_key
                )
                self._manager.lifecycle.bind(active)
            s = self._adopt(active)
        return s

    def _adopt_draft(self, draft: Draft, moved: bool) -> Session:
        s = self._session_cache = draft.session
        self._draft = draft
        if moved:
            self._modified = True  # served by another node now: the cookie must name this one
        self._remember(s)
        return s

    def _adopt(self, active: ActiveRequest) -> Session:
        s = active.session
        self._session_cache = s
        if self._manager.lifecycle.cookie_action(active) == "set" and active.presented_id:
            self._modified = True  # served by another node now: the cookie must name this one
        self._remember(s)
        active.end_when_emptied = False  # Django's rule: emptied, it keeps its key
        self._active = active
        state = _request.get()
        if state is not None:
            state.stores.append(self)  # ended on request_finished; outside one, by save()/load()
        return s

    def _remember(self, s: Session) -> None:
        self._token = s.token
        self._loaded_id = s.id if s.created else self._presented_key

    def _check_not_deleted(self, s: Session) -> None:
        """Raise ``UpdateError`` (the change rolled back) if another context ended the session
        this store loaded: its shared Session then carries a new token."""
        if self._token is None or s.token == self._token:
            return
        self._end(ok=False)
        raise UpdateError

    def _end(self, *, ok: bool) -> None:
        active, self._active = self._active, None
        if active is not None:
            self._manager.lifecycle.end_request(active, ok=ok)

    def _take_hold(self, s: Session) -> ActiveRequest:
        active, self._active = self._active, None
        if active is None:
            active = self._manager.lifecycle.enter(s, wait=True)
            assert active is not None
        return active

    # -- SessionBase's storage methods ----------------------------------------------------------

    def load(self) -> Session:
        """The session as stored. Outside a request, the private copy's unsaved changes are
        dropped and the session read again (Django's backends read their storage here); in
        one, the held one."""
        self._drop_draft()
        return self._get_session()

    async def aload(self) -> Session:
        self._drop_draft()
        return await self._aget_session()

    def _drop_draft(self) -> None:
        if self._draft is not None:
            self._draft = None
            self._presented_key = self._loaded_id
            self.__dict__.pop("_session_cache", None)

    def exists(self, session_key: str | None) -> bool:
        return self._manager.lifecycle.exists(self._app, session_key)

    async def aexists(self, session_key: str | None) -> bool:
        return await asyncio.to_thread(self.exists, session_key)

    def create(self) -> None:
        """A session with a new key, stored now: the current data under a new id if the session
        exists, else an empty session."""
        s = self._session
        if s.created:
            s.rotate_id()
        else:
            s.sync()
        self._remember(s)
        self._modified = True

    async def acreate(self) -> None:
        await self._aget_session()
        await asyncio.to_thread(self.create)

    def save(self, must_create: bool = False) -> None:
        """End the request's hold on the session: the write policy decides whether to write
        now. A session that does not exist yet is created (and stored) first."""
        s = self._session
        if must_create and s.in_store:
            raise CreateError
        if self._draft is not None:
            s.sync()  # outside a request: the private copy written through the manager, now
            self._remember(s)
            return
        self._check_not_deleted(s)
        if not s.created:
            s.sync()
        self._remember(s)
        self._manager.lifecycle.end_request(self._take_hold(s), ok=True)

    async def asave(self, must_create: bool = False) -> None:
        s = await self._aget_session()
        if must_create and s.in_store:
            raise CreateError
        if self._draft is not None:
            await asyncio.to_thread(s.sync)
            self._remember(s)
            return
        self._check_not_deleted(s)
        if not s.created:
            await asyncio.to_thread(s.sync)
        self._remember(s)
        active = self._active or self._manager.lifecycle.enter(s, wait=False)
        if active is None:
            active = await asyncio.to_thread(self._take_hold, s)
        self._active = None
        pending = self._manager.lifecycle.finish_request(active, ok=True)
        if pending is not None:
            await asyncio.to_thread(pending)

    def delete(self, session_key: str | None = None) -> None:
        """End a session: this one (``session_key`` None or its own id), or another."""
        s = self._loaded()
        if session_key is None or (s is not None and _token(session_key) == s.token):
            if session_key is None and self._presented_key is None and s is None:
                return
            self._session.invalidate()
            self._remember(self._session)
            return
        with self._manager.request(self._app, session_key) as other:
            if other.created:
                other.invalidate()

    async def adelete(self, session_key: str | None = None) -> None:
        if session_key is None or session_key == self.session_key:
            await self._aget_session()
        await asyncio.to_thread(self.delete, session_key)

    def clear(self) -> None:
        self._session.clear()
        self.accessed = self._modified = True

    def is_empty(self) -> bool:
        s = self._loaded()
        if s is None:
            return not self._presented_key
        if self._token is not None and s.token != self._token:
            # Ended by another context (a concurrent logout) under this store: what it holds is
            # not empty, as with Django's backends, so a modified one is saved and the save
            # raises UpdateError (Django answers SessionInterrupted) instead of a silent 200.
            return False
        return not s.created and not len(s)

    def cycle_key(self) -> None:
        """A new id for the same data (``login()`` calls it, against fixation)."""
        self._session.rotate_id()
        self._remember(self._session)
        self._modified = True

    async def acycle_key(self) -> None:
        s = await self._aget_session()
        await asyncio.to_thread(s.rotate_id)
        self._remember(s)
        self._modified = True

    def flush(self) -> None:
        """End the session (``logout()`` calls it): deleted from the store, tombstoned, and
        replaced by a new empty one that exists only if something is set."""
        self._session.invalidate()
        self._remember(self._session)
        self._modified = True

    async def aflush(self) -> None:
        s = await self._aget_session()
        await asyncio.to_thread(s.invalidate)
        self._remember(s)
        self._modified = True

    @classmethod
    def clear_expired(cls) -> None:
        """Sweep: what ``manage.py clearsessions`` runs."""
        get_manager().sweep()

    @classmethod
    async def aclear_expired(cls) -> None:
        await asyncio.to_thread(get_manager().sweep)


def _token(session_id: str) -> str | None:
    parsed = ids.parse(session_id)
    return parsed[0] if parsed else None


# Below SessionStore, which they import.
from .cookies import SessionMiddleware  # noqa: E402
from .middleware import SessionKeeperConfig, SessionUnavailableMiddleware, check_settings  # noqa: E402

__all__ = [
    "SessionKeeperConfig",
    "SessionMiddleware",
    "SessionStore",
    "SessionUnavailableMiddleware",
    "app_name",
    "check_settings",
    "get_manager",
    "reset_manager",
]
