"""How a session id travels: a cookie (default), URL rewriting (``;sessionid=...``) or a header.

Sans-IO: these functions read and produce header values and paths; adapters move them in and out of
their framework's request and response. Nothing here validates ids: the manager does, before any
store access.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from urllib.parse import quote

from .errors import ConfigurationError


class Mode(enum.Enum):
    COOKIE = "cookie"
    URL = "url"
    HEADER = "header"


_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}
_NAME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")


@dataclass(frozen=True)
class Tracking:
    """Where the session id is read from and written to.

    ``modes`` are tried in order when reading; the cookie is written when ``COOKIE`` is among them.
    ``secure=None`` sets the Secure flag exactly when the request came over https.
    ``cookie_partitioned`` adds ``Partitioned`` (CHIPS: a third-party cookie kept per top-level
    site), which implies ``Secure``. ``attribute_case="lower"`` writes the attribute names in
    lower case (``path=/; httponly``), as Starlette's own middleware does (browsers read them
    case-insensitively; ``Max-Age`` keeps its case, as Starlette's).
    """

    modes: tuple[Mode, ...] = (Mode.COOKIE,)
    cookie_name: str = "sessionid"
    cookie_path: str = "/"
    cookie_domain: str | None = None
    cookie_max_age_s: int | None = None  # None: a browser-session cookie
    cookie_httponly: bool = True
    cookie_samesite: str | None = "Lax"  # "Lax", "Strict", "None", or None to omit
    cookie_secure: bool | None = None
    cookie_partitioned: bool = False
    attribute_case: str = "title"  # "title" (Path=/; HttpOnly) or "lower" (path=/; httponly)
    url_param: str = "sessionid"
    header_name: str = "X-Session-Id"

    def __post_init__(self) -> None:
        if not self.modes:
            raise ConfigurationError("Tracking needs at least one mode")
        for name in (self.cookie_name, self.url_param, self.header_name):
            if not _NAME_RE.fullmatch(name):
                raise ConfigurationError(
                    f"{name!r} is not a valid cookie, parameter or header name"
                )
        if self.cookie_samesite is not None and self.cookie_samesite.lower() not in _SAMESITE:
            raise ConfigurationError("cookie_samesite must be Lax, Strict, None or None (omit)")
        if self.attribute_case not in ("title", "lower"):
            raise ConfigurationError('attribute_case must be "title" or "lower"')

    @property
    def uses_cookie(self) -> bool:
        return Mode.COOKIE in self.modes

    @property
    def uses_url(self) -> bool:
        return Mode.URL in self.modes

    @property
    def header_key_wsgi(self) -> str:
        return "HTTP_" + self.header_name.upper().replace("-", "_")

    # -- reading ----------------------------------------------------------------------------

    def read(
        self, *, cookie_header: str | None, path_param: str | None, header_value: str | None
    ) -> str | None:
        """The presented id, from the first configured source that has one."""
        for mode in self.modes:
            if mode is Mode.COOKIE and cookie_header:
                value = cookie_value(cookie_header, self.cookie_name)
            elif mode is Mode.URL:
                value = path_param
            elif mode is Mode.HEADER:
                value = header_value
            else:
                value = None
            if value:
                return value
        return None

    # -- writing ----------------------------------------------------------------------------

    def set_cookie(self, session_id: str, *, https: bool) -> str:
        """A ``Set-Cookie`` value carrying ``session_id``."""
        parts = [f"{self.cookie_name}={session_id}", f"{self._n('Path')}={self.cookie_path}"]
        if self.cookie_domain:
            parts.append(f"{self._n('Domain')}={self.cookie_domain}")
        if self.cookie_max_age_s is not None:
            parts.append(f"Max-Age={int(self.cookie_max_age_s)}")
        return self._flags(parts, https)

    def delete_cookie(self, *, https: bool) -> str:
        parts = [f'{self.cookie_name}=""', f"{self._n('Path')}={self.cookie_path}"]
        if self.cookie_domain:
            parts.append(f"{self._n('Domain')}={self.cookie_domain}")
        parts.append("Max-Age=0")
        parts.append(f"{self._n('Expires')}=Thu, 01 Jan 1970 00:00:00 GMT")
        return self._flags(parts, https)

    def response_headers(self, session_id: str | None, *, https: bool) -> list[tuple[str, str]]:
        """Headers that send ``session_id`` to the client, or (``None``) delete its cookie."""
        out: list[tuple[str, str]] = []
        if self.uses_cookie:
            out.append(
                (
                    "Set-Cookie",
                    self.set_cookie(session_id, https=https)
                    if session_id is not None
                    else self.delete_cookie(https=https),
                )
            )
        if Mode.HEADER in self.modes and session_id is not None:
            out.append((self.header_name, session_id))
        return out

    def _n(self, name: str) -> str:
        return name.lower() if self.attribute_case == "lower" else name

    def flags(self, *, https: bool) -> CookieFlags:
        """The cookie's flags for a request that came over https or not: what :meth:`set_cookie`
        renders, for an adapter that renders the cookie with its framework's own API."""
        secure = https if self.cookie_secure is None else self.cookie_secure
        samesite = None if self.cookie_samesite is None else _SAMESITE[self.cookie_samesite.lower()]
        if samesite == "None" or self.cookie_partitioned:
            secure = True  # browsers drop SameSite=None, and a Partitioned cookie, without Secure
        return CookieFlags(secure, self.cookie_httponly, samesite, self.cookie_partitioned)

    def _flags(self, parts: list[str], https: bool) -> str:
        flags = self.flags(https=https)
        if flags.httponly:
            parts.append(self._n("HttpOnly"))
        if flags.samesite is not None:
            parts.append(f"{self._n('SameSite')}={self._n(flags.samesite)}")
        if flags.secure:
            parts.append(self._n("Secure"))
        if flags.partitioned:
            parts.append(self._n("Partitioned"))
        return "; ".join(parts)


@dataclass(frozen=True)
class CookieFlags:
    """A session cookie's flags as sent (:meth:`Tracking.flags`); ``samesite`` is ``"Lax"``,
    ``"Strict"``, ``"None"`` or ``None`` (the attribute omitted)."""

    secure: bool
    httponly: bool
    samesite: str | None
    partitioned: bool


def cookie_value(header: str, name: str) -> str | None:
    """The first value of cookie ``name`` in a ``Cookie`` header; tolerant of junk around it."""
    for chunk in header.split(";"):
        key, sep, value = chunk.partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if value:
                return value
    return None


def split_path_param(path: str, name: str = "sessionid") -> tuple[str, str | None]:
    """Remove ``;name=value`` from the last segment of ``path``: ``(clean_path, value)``.

    ``/cart;sessionid=abc.n1`` -> ``("/cart", "abc.n1")``. Other path parameters are kept.
    """
    marker = f";{name}="
    at = path.find(marker)
    if at < 0:
        return path, None
    end = at + len(marker)
    stop = len(path)
    for sep in (";", "/"):
        i = path.find(sep, end)
        if i >= 0:
            stop = min(stop, i)
    return path[:at] + path[stop:], path[end:stop] or None


def encode_url(url: str, session_id: str, name: str = "sessionid") -> str:
    """``url`` with ``;name=session_id`` before its query and fragment (servlet URL rewriting)."""
    cut = len(url)
    for sep in ("?", "#"):
        i = url.find(sep)
        if i >= 0:
            cut = min(cut, i)
    base, rest = url[:cut], url[cut:]
    base, _ = split_path_param(base, name)
    return f"{base};{name}={quote(session_id, safe='._-')}{rest}"
