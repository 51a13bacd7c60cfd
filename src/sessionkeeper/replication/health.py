"""``health_app``: the cluster's replication health over HTTP, for a load balancer or a
rolling-restart script that speaks HTTP rather than running the CLI.

``GET`` answers ``200`` with the probe's JSON when every member answered and each has its
sessions' replicas, ``503`` otherwise (``?members=N`` requires N answering nodes). Each request
asks the cluster afresh over NATS (:mod:`.probe`), in a thread under ASGI, never on the loop::

    from sessionkeeper.replication.health import health_app
    app = health_app(sk.Replication("nats://127.0.0.1:4222", cluster="shop", key=KEY))
    app = health_app(manager)               # the replication settings of a manager
    app = health_app(manager, asgi=True)    # Starlette: app.mount("/replication/health", app)
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .probe import ClusterHealth, cluster_health
from .settings import Replication, parse_replication

if TYPE_CHECKING:
    from ..manager import SessionManager

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def health_app(
    source: Replication | SessionManager, *, asgi: bool = False, timeout_s: float = 1.0
) -> WSGIApp | ASGIApp:
    config = parse_replication(
        source if isinstance(source, Replication) else source.settings.replication
    )
    if config is None:
        raise ConfigurationError("health_app needs a manager that replicates, or a Replication")

    def probe(query: str) -> tuple[str, bytes]:
        try:
            members = int(urllib.parse.parse_qs(query).get("members", ["1"])[0])
        except ValueError:
            return "400 Bad Request", b'{"error": "members must be an integer"}'
        result = cluster_health(config, timeout_s=timeout_s, members=members)
        return _answer(result)

    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        status, body = probe(environ.get("QUERY_STRING", ""))
        start_response(status, _headers(body))
        return [body if environ.get("REQUEST_METHOD", "GET") == "GET" else b""]

    async def asgi_app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        if scope.get("method", "GET") not in ("GET", "HEAD"):
            status, body = "405 Method Not Allowed", b""
        else:
            query = scope.get("query_string", b"").decode("latin-1")
            status, body = await asyncio.to_thread(probe, query)  # the probe runs its own loop
        headers = [(k.lower().encode(), v.encode()) for k, v in _headers(body)]
        await send({"type": "http.response.start", "status": int(status[:3]), "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return asgi_app if asgi else wsgi


def _answer(result: ClusterHealth) -> tuple[str, bytes]:
    body = json.dumps(result.as_dict(), sort_keys=True).encode()
    return ("200 OK" if result.healthy else "503 Service Unavailable"), body


def _headers(body: bytes) -> list[tuple[str, str]]:
    return [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]
