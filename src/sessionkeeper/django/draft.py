"""A ``SessionStore``'s private copy of its session outside a request (a shell, a management
command, a ``RequestFactory`` test), as Django's own backends keep one: read from the manager when
first used, changed privately (no other ``SessionStore`` and no store sees a change), and written
through the manager by ``save()``, which puts it in the cache and the store.

The copy is a :class:`Session` whose host is its :class:`Draft`: values are checked when set, as
the manager checks them, and nothing else reaches the manager until an operation that writes.
``save()`` (``sync``), ``cycle_key()`` (``rotate_id``) and ``flush()`` / ``delete()``
(``invalidate``) each hold the shared session for the time of one request: the keys the copy
changed since it was read (set, deleted, or changed in place) and its expiry are applied to it,
the operation runs and is written now, and the copy is read again. A failure rolls the applied
changes back (the hold's undo log). Saving a session another context ended meanwhile raises
``UpdateError`` and changes nothing.

Inside a request (Django's ``request_started`` seen) a ``SessionStore`` uses the shared cached
session instead, and the write policy decides when it is written.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib.sessions.backends.base import UpdateError

from .. import ids
from ..lifecycle import ActiveRequest
from ..session import Session

if TYPE_CHECKING:
    from ..manager import SessionManager

#: What a publishing operation does to the shared session once the copy's changes are in it.
Operation = Callable[[Session], None]


class Draft:
    """One ``SessionStore``'s private copy (``session``) and the state it was read at. Not
    thread safe, as the ``SessionStore`` that owns it."""

    def __init__(self, manager: SessionManager, app: str) -> None:
        self._manager = manager
        self._app = app
        self._suffix_text = manager.node
        self._base: dict[str, Any] = {}
        self._base_timeout = 0.0
        self._base_deadline: float | None = None
        self.session = Session(
            self, app, ids.new_token(), created_at=self._now(), timeout_s=manager.timeout_for(app)
        )

    # -- reading ----------------------------------------------------------------------------------

    def read(self, presented: str | None) -> bool:
        """Copy the session ``presented`` names (a new one if none); returns whether its cookie
        must be set again (the session is served by another node than the id names)."""
        lifecycle = self._manager.lifecycle
        active = lifecycle.begin_request(self._app, presented)
        try:
            return self.take(active)
        finally:
            lifecycle.end_request(active, ok=True)

    async def aread(self, presented: str | None) -> bool:
        """:meth:`read` on an event loop: a cached session is read there, without a thread."""
        lifecycle = self._manager.lifecycle
        active = lifecycle.begin_cached(self._app, presented)
        if active is None:
            active = await asyncio.to_thread(lifecycle.begin_request, self._app, presented)
            lifecycle.bind(active)
        try:
            return self.take(active)
        finally:
            pending = lifecycle.finish_request(active, ok=True)
            if pending is not None:
                await asyncio.to_thread(pending)

    def take(self, active: ActiveRequest) -> bool:
        """Copy the session ``active`` holds; returns whether its cookie must be set again (it
        is served by another node than the presented id names). The caller ends the hold."""
        self._copy_from(active.session)
        return (
            self._manager.lifecycle.cookie_action(active) == "set"
            and active.presented_id is not None
        )

    def _copy_from(self, shared: Session) -> None:
        d = self.session
        with shared.lock:
            data = shared.data_view()
            d.replace_data(copy.deepcopy(data))
            self._base = copy.deepcopy(data)
            d.token, d.version = shared.token, shared.version
            d.created, d.in_store = shared.created, shared.in_store
            d.created_at, d.last_access_at = shared.created_at, shared.last_access_at
            d.timeout_s = self._base_timeout = shared.timeout_s
            d.absolute_expires_at = self._base_deadline = shared.absolute_expires_at
            self._suffix_text = shared.id[len(shared.token) + 1 :]
        d.changes.clear()

    # -- writing through the manager ----------------------------------------------------------------

    def key(self) -> str | None:
        """The id to hold the shared session by: the copy's, once it names a real session."""
        return self.session.id if self.session.created else None

    def publish(self, active: ActiveRequest, operation: Operation) -> None:
        """With the shared session held (``active``): apply the copy's changes, run
        ``operation``, end the hold and read the copy again. ``UpdateError`` if the session the
        copy was read from has ended; any failure rolls the applied changes back."""
        lifecycle = self._manager.lifecycle
        active.end_when_emptied = False  # Django's rule: emptied, a session keeps its key
        shared = active.session
        d = self.session
        try:
            if d.created and not (shared.created and shared.token == d.token):
                raise UpdateError
            self._apply(shared)
            operation(shared)
        except BaseException:
            lifecycle.end_request(active, ok=False)
            raise
        lifecycle.end_request(active, ok=True)
        self._copy_from(shared)

    def _apply(self, shared: Session) -> None:
        d = self.session
        for key in self._base.keys() - dict.keys(d):
            shared.pop(key, None)
        for key, value in dict.items(d):
            if key not in self._base or self._base[key] != value:
                shared[key] = copy.deepcopy(value)
        if d.timeout_s != self._base_timeout:
            shared.set_timeout(d.timeout_s)
        if d.absolute_expires_at != self._base_deadline:
            shared.record_deadline(d.absolute_expires_at)

    def end(self, active: ActiveRequest | None) -> None:
        """``invalidate()``: end the shared session ``active`` holds, if it is still the one the
        copy was read from (``None``: the copy never named a real session); the copy becomes a
        new, empty session."""
        if active is not None:
            lifecycle = self._manager.lifecycle
            shared = active.session
            try:
                if shared.created and shared.token == self.session.token:
                    shared.invalidate()
            except BaseException:
                lifecycle.end_request(active, ok=False)
                raise
            lifecycle.end_request(active, ok=True)
        self.session.reset_as_new(ids.new_token(), self._now())
        self._base, self._base_deadline = {}, None
        self._base_timeout = self.session.timeout_s
        self._suffix_text = self._manager.node

    # -- session.SessionHost: the copy's host -------------------------------------------------------

    @property
    def _node(self) -> str:
        return self._manager.node

    def _suffix(self, session: Session) -> str:
        return self._suffix_text

    def _validate_value(self, session: Session, key: str, value: Any) -> None:
        self._manager.check_value(session, key, value)

    def _attribute_changed(self, session: Session, key: str, old: Any, new: Any) -> None:
        pass  # private until saved: no listener hears of it, no policy writes it

    def _metadata_changed(self, session: Session) -> None:
        pass

    def _now(self) -> float:
        return self._manager.clock.time()

    def _hold(self) -> ActiveRequest:
        return self._manager.lifecycle.begin_request(self._app, self.key())

    def _sync(self, session: Session) -> None:
        self.publish(self._hold(), _write)

    def _rotate_id(self, session: Session) -> None:
        self.publish(self._hold(), _rotate_and_write)

    def _invalidate(self, session: Session) -> None:
        self.end(self._hold() if self.session.created else None)


def _write(shared: Session) -> None:
    if shared.unwritten or not shared.created:
        shared.sync()  # creates it, empty, if need be: Django's save() stores an empty session


def _rotate_and_write(shared: Session) -> None:
    shared.rotate_id()  # stores it under the new id when the old one was stored
    _write(shared)
