"""The apps of the real-server metrics tests: ``POST /incr`` counts in the session and answers
the serving worker's pid; ``/metrics`` is ``sessionkeeper.metrics``. ``application`` is the WSGI
form (gunicorn), ``asgi_application`` the ASGI one (uvicorn). Each worker builds its own manager
on import (unless gunicorn ``--preload``s it), pushing its counts every ``METRICS_PUSH_S`` s."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import sessionkeeper as sk
from sessionkeeper.asgi import SessionMiddleware as AsgiSessionMiddleware
from sessionkeeper.metrics import Exporter, metrics_app
from sessionkeeper.wsgi import SessionMiddleware

manager = sk.SessionManager(store=os.environ["SESSIONKEEPER_STORE"], flush_poll_s=0.2)
exporter = Exporter(push_interval_s=float(os.environ["METRICS_PUSH_S"]))
metrics = metrics_app(manager, exporter=exporter)
asgi_metrics = metrics_app(manager, asgi=True, exporter=exporter)


def counter(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    session = environ["sessionkeeper.session"]
    if environ["REQUEST_METHOD"] == "POST":
        session["n"] = session.get("n", 0) + 1
    body = json.dumps({"n": session.get("n", 0), "pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


sessions = SessionMiddleware(counter, manager, app_name="metrics-test")


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/metrics":
        return metrics(environ, start_response)
    return sessions(environ, start_response)


async def asgi_counter(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":  # forwarded by the session middleware: answered by metrics'
        await asgi_metrics(scope, receive, send)
        return
    session = scope["session"]
    if scope["method"] == "POST":
        session["n"] = session.get("n", 0) + 1
    body = json.dumps({"n": session.get("n", 0), "pid": os.getpid()}).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


asgi_sessions = AsgiSessionMiddleware(asgi_counter, manager, app_name="metrics-test")


async def asgi_application(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http" and scope["path"] == "/metrics":
        await asgi_metrics(scope, receive, send)
    else:
        await asgi_sessions(scope, receive, send)
