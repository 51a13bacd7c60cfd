"""``sessionkeeper.django.SessionMiddleware``: Django's ``SessionMiddleware``, with the session cookie
the manager's :class:`Tracking` describes.

Django's own middleware renders the cookie from the ``SESSION_COOKIE_*`` settings, which have no
``Partitioned`` and know nothing of ``SESSIONKEEPER["TRACKING"]``. This one reads the id and
renders the cookie through the manager's ``Tracking`` (``_process.cookie_tracking``:
``SESSIONKEEPER["TRACKING"]``, else built from those same settings): its name, ``Path``, ``Domain``, ``Secure`` (``None``: on
https requests), ``HttpOnly``, ``SameSite`` and ``Partitioned``, with Tracking's rules (SameSite
``None`` and Partitioned imply Secure). The header mode is honoured too (the id read from, and
sent in, ``Tracking.header_name``). ``Max-Age`` and ``Expires`` stay the session's, as in Django:
``set_expiry()``, else ``SESSION_COOKIE_AGE``, or none with ``SESSION_EXPIRE_AT_BROWSER_CLOSE``.
Everything else is Django's: save only when modified (or ``SESSION_SAVE_EVERY_REQUEST``) and the
status is below 500, ``SessionInterrupted`` on ``UpdateError``, the cookie deleted when a
request that came with one leaves its session empty, ``Vary: Cookie`` when the session was
accessed. The cookie is rendered as a ``Morsel``, in Django's attribute order.
"""

from __future__ import annotations

import time
from http.cookies import Morsel
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import patch_vary_headers
from django.utils.http import http_date

from ..tracking import Mode, Tracking
from ._process import cookie_tracking

_EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"
#: Python 3.14's ``Morsel`` knows ``partitioned``; before it, a subclass renders the flag.
_NATIVE_PARTITIONED = "partitioned" in Morsel._reserved  # type: ignore[attr-defined]


class SessionMiddleware(DjangoSessionMiddleware):
    """Use it in ``MIDDLEWARE`` instead of ``django.contrib.sessions.middleware.SessionMiddleware``
    (same place), with ``SESSION_ENGINE = "sessionkeeper.django"``."""

    def process_request(self, request: HttpRequest) -> None:
        request.session = self.SessionStore(presented_id(request, cookie_tracking()))

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> Any:
        try:
            session = request.session
            accessed, modified, empty = session.accessed, session.modified, session.is_empty()
        except AttributeError:
            return response
        tracking = cookie_tracking()
        https = request.is_secure()
        vary = accessed
        if tracking.uses_cookie and tracking.cookie_name in request.COOKIES and empty:
            delete_cookie(response, tracking, https=https)
            vary = True
        elif (modified or _save_every_request()) and not empty and response.status_code < 500:
            try:
                session.save()
            except UpdateError:
                raise SessionInterrupted(
                    "The request's session was deleted before the request completed. The user "
                    "may have logged out in a concurrent request, for example."
                ) from None
            max_age = None if session.get_expire_at_browser_close() else session.get_expiry_age()
            send_id(response, tracking, session.session_key, https=https, max_age=max_age)
            vary = True
        if vary:
            patch_vary_headers(response, ("Cookie",))
        return response


def _save_every_request() -> bool:
    return bool(settings.SESSION_SAVE_EVERY_REQUEST)


def presented_id(request: HttpRequest, tracking: Tracking) -> str | None:
    """The id the request came with, from the first of the tracking's modes that has one (the
    URL mode is not read here: Django routes on the path)."""
    for mode in tracking.modes:
        if mode is Mode.COOKIE:
            value = request.COOKIES.get(tracking.cookie_name)
        elif mode is Mode.HEADER:
            value = request.META.get(tracking.header_key_wsgi)
        else:
            value = None
        if value:
            return str(value)
    return None


def send_id(
    response: HttpResponseBase,
    tracking: Tracking,
    session_id: str | None,
    *,
    https: bool,
    max_age: int | None,
) -> None:
    """Send ``session_id`` as the tracking says: the cookie (``max_age`` ``None``: a
    browser-session cookie) and, in header mode, the id header."""
    if tracking.uses_cookie:
        expires = None if max_age is None else http_date(time.time() + max_age)
        _set(response, tracking, session_id or "", https=https, max_age=max_age, expires=expires)
    if Mode.HEADER in tracking.modes and session_id:
        response[tracking.header_name] = session_id


def delete_cookie(response: HttpResponseBase, tracking: Tracking, *, https: bool) -> None:
    """The cookie's deletion, in its scope and with its flags (a Partitioned cookie is deleted
    only by a Partitioned deletion); without HttpOnly, as Django renders a deletion."""
    _set(response, tracking, "", https=https, max_age=0, expires=_EPOCH, deleting=True)


def _set(
    response: HttpResponseBase,
    tracking: Tracking,
    value: str,
    *,
    https: bool,
    max_age: int | None,
    expires: str | None,
    deleting: bool = False,
) -> None:
    flags = tracking.flags(https=https)
    name = tracking.cookie_name
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        expires=expires,
        path=tracking.cookie_path,
        domain=tracking.cookie_domain,
        secure=flags.secure or None,
        httponly=(flags.httponly and not deleting) or None,
        samesite=flags.samesite,
    )
    if flags.partitioned:
        response.cookies[name] = _partitioned(response.cookies[name])


def _partitioned(morsel: Morsel[str]) -> Morsel[str]:
    if _NATIVE_PARTITIONED:
        morsel["partitioned"] = True
        return morsel
    out = _PartitionedMorsel()
    out.set(morsel.key, morsel.value, morsel.coded_value)
    out.update(morsel)
    return out


class _PartitionedMorsel(Morsel[str]):
    """A ``Morsel`` that renders ``Partitioned`` last, for Pythons whose ``Morsel`` has no such
    attribute (``response.cookies`` renders each Set-Cookie header from its morsel)."""

    def OutputString(self, attrs: Any = None) -> str:  # Morsel's own name
        return f"{super().OutputString(attrs)}; Partitioned"
