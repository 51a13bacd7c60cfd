"""The WSGI app of the gunicorn metrics test: ``POST /incr`` counts in the session and answers
the serving worker's pid; ``/metrics`` is ``sessionkeeper.metrics``. Each worker builds its own
manager on import (no ``--preload``), pushing its counts every ``METRICS_PUSH_S`` seconds."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import sessionkeeper as sk
from sessionkeeper.metrics import Exporter, metrics_app
from sessionkeeper.wsgi import SessionMiddleware

manager = sk.SessionManager(store=os.environ["SESSIONKEEPER_STORE"], flush_poll_s=0.2)
exporter = Exporter(push_interval_s=float(os.environ["METRICS_PUSH_S"]))
metrics = metrics_app(manager, exporter=exporter)


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
