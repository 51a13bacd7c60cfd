"""The little HTTP the console needs on top of WSGI: a parsed request, a response, and the
headers every response carries (no caching, a strict Content-Security-Policy)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: No script at all, styles and images from the console only, forms posting back to it only,
#: never framed. The charts are inline SVG with presentation attributes, which CSP allows.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]
MAX_FORM_BYTES = 64 * 1024


@dataclass
class Request:
    method: str
    path: str  # below the console's mount point, "/" at least
    root: str  # the mount point (SCRIPT_NAME), "" at the server's root
    query: dict[str, str]
    form: dict[str, str]
    cookies: dict[str, str]
    authorization: str
    remote: str
    https: bool

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> Request:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        form: dict[str, str] = {}
        if method == "POST":
            try:
                length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_FORM_BYTES)
            except ValueError:
                length = 0
            body = environ["wsgi.input"].read(length) if length > 0 else b""
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        cookies: dict[str, str] = {}
        try:
            jar = SimpleCookie(str(environ.get("HTTP_COOKIE", "")))
            cookies = {k: m.value for k, m in jar.items()}
        except CookieError:
            pass
        return cls(
            method=method,
            path=str(environ.get("PATH_INFO", "")) or "/",
            root=str(environ.get("SCRIPT_NAME", "")).rstrip("/"),
            query=dict(parse_qsl(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)),
            form=form,
            cookies=cookies,
            authorization=str(environ.get("HTTP_AUTHORIZATION", "")),
            remote=str(environ.get("REMOTE_ADDR", "-")),
            https=environ.get("wsgi.url_scheme") == "https",
        )


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def redirect(cls, location: str) -> Response:
        return cls(303, b"", "text/plain; charset=utf-8", [("Location", location)])

    def set_cookie(self, name: str, value: str, *, path: str, secure: bool) -> None:
        flags = f"; Path={path}; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
        self.headers.append(("Set-Cookie", f"{name}={value}{flags}"))

    def delete_cookie(self, name: str, *, path: str) -> None:
        self.headers.append(
            ("Set-Cookie", f"{name}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict")
        )

    def send(self, start_response: Callable[..., Any]) -> list[bytes]:
        status = f"{self.status} {HTTPStatus(self.status).phrase}"
        headers = [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(self.body))),
            *SECURITY_HEADERS,
            *self.headers,
        ]
        start_response(status, headers)
        return [self.body]
