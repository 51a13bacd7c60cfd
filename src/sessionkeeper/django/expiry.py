"""``SessionStore``'s expiry: Django's ``set_expiry`` and ``get_expiry_*`` over the session's
server-side idle timeout and absolute deadline.

``set_expiry(seconds)`` also sets the session's idle timeout; a ``datetime`` or ``timedelta``
sets its absolute deadline (reads do not renew it); an expiry in the past ends the session now.
``get_expiry_age`` and ``get_expiry_date`` never go past that deadline, nor past the app's
``max_lifetime_s``: the cookie ends with the session.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.utils import timezone


class ExpiryMixin(SessionBase):
    """The expiry methods of ``SessionStore`` (which gives ``_session``, ``_manager``, ``_app``,
    ``_draft``, ``_remember`` and ``_modified``)."""

    def set_expiry(self, value: Any) -> None:
        super().set_expiry(value)
        self._apply_expiry()

    async def aset_expiry(self, value: Any) -> None:
        await super().aset_expiry(value)
        if self._expired_now():
            await asyncio.to_thread(self._apply_expiry)  # invalidate() deletes from the store
        else:
            self._apply_expiry()

    def _expired_now(self) -> bool:
        return bool(self.get("_session_expiry")) and self.get_expiry_date() <= timezone.now()

    def _apply_expiry(self) -> None:
        s = self._session
        if self._expired_now():
            # An expiry in the past ends the session now: a store keeping it would never load it
            # again, and an idle timeout of a second would let the next request read it.
            if s.created:
                s.invalidate()
                self._remember(s)
            else:
                s.clear()
            self._modified = True
            return
        if not s.created and self._draft is None:
            return  # nothing to end: the session does not exist (a private copy keeps it)
        expiry = self.get("_session_expiry")
        if isinstance(expiry, str):  # Django stores a datetime (or timedelta) as ISO text
            s.set_absolute_expiry(datetime.fromisoformat(expiry).timestamp())
        else:  # seconds, or none: the app's lifetime, if it has one
            lifetime = self._manager.settings.max_lifetime_for(self._app)
            s.set_absolute_expiry(None if lifetime is None else s.created_at + lifetime)
        if expiry and not isinstance(expiry, str):
            s.set_timeout(max(1, self.get_expiry_age()))
        else:
            s.set_timeout(self._manager.timeout_for(self._app))

    def get_expiry_age(self, **kwargs: Any) -> int:
        return int(super().get_expiry_age(**self._deadline_bound(kwargs)))

    def get_expiry_date(self, **kwargs: Any) -> datetime:
        date: datetime = super().get_expiry_date(**self._deadline_bound(kwargs))
        return date

    def _deadline_bound(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` with the session's absolute deadline as the expiry when that comes first:
        the cookie then ends with the server-side session. An explicit ``expiry`` is kept."""
        deadline = self._session.absolute_expires_at if "expiry" not in kwargs else None
        if deadline is None:
            return kwargs
        when = datetime.fromtimestamp(deadline, UTC if settings.USE_TZ else None)
        if when < super().get_expiry_date(**kwargs):
            return {**kwargs, "expiry": when}
        return kwargs
