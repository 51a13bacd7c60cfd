"""Driving the WSGI middleware directly: a minimal environ and a start_response that records."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def cookie(self) -> str | None:
        values = self.header("Set-Cookie")
        return values[0] if values else None

    @property
    def session_id(self) -> str | None:
        c = self.cookie
        if c is None:
            return None
        value = c.split(";")[0].split("=", 1)[1]
        return value if value != '""' else None


def environ(
    path: str = "/", cookie: str | None = None, scheme: str = "http", **extra: Any
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": scheme,
    }
    if cookie is not None:
        env["HTTP_COOKIE"] = cookie
    env.update(extra)
    return env


def call(app: Any, env: dict[str, Any]) -> Response:
    resp = Response()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        resp.status = int(status[:3])
        resp.headers = list(headers)
        return lambda _data: None

    body: Iterable[bytes] = app(env, start_response)
    try:
        resp.body = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return resp
