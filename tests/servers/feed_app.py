"""A WSGI app for the cross-node invalidation tests, served by gunicorn as one node:
``gunicorn tests.servers.feed_app:application`` with ``SESSIONKEEPER_STORE``,
``SESSIONKEEPER_NODE`` and ``SESSIONKEEPER_STORE_OPTIONS`` (JSON: the test's table or key prefix).

| route | what it does |
|---|---|
| ``GET /healthz`` | ``{"node": name}`` (no session) |
| ``POST /set?k=v`` | stores ``k`` in the session |
| ``POST /login?user=NAME`` | ``rotate_id()``, then stores the user |
| ``POST /logout`` | ``invalidate()`` |
| ``GET /whoami`` | the session's contents |

Every session route answers ``{"node": name, "pid": the worker's pid, "session": contents}``.

The manager is built at the first request, in the worker (after gunicorn's fork).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

import sessionkeeper as sk
from sessionkeeper.wsgi import SessionMiddleware


def shop(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    s = environ["sessionkeeper.session"]
    path = environ.get("PATH_INFO", "/")
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/set":
        s.update(query)
    elif path == "/login":
        s.rotate_id()
        s["user"] = query["user"]
    elif path == "/logout":
        s.invalidate()
    body = {"node": os.environ["SESSIONKEEPER_NODE"], "pid": os.getpid(), "session": dict(s)}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


class _Lazy:
    def __init__(self) -> None:
        self._app: SessionMiddleware | None = None
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"node": os.environ["SESSIONKEEPER_NODE"]}).encode()]
        with self._lock:
            if self._app is None:
                manager = sk.SessionManager(
                    os.environ["SESSIONKEEPER_STORE"],
                    node=os.environ["SESSIONKEEPER_NODE"],
                    store_options=json.loads(os.environ["SESSIONKEEPER_STORE_OPTIONS"]),
                )
                self._app = SessionMiddleware(shop, manager, "shop")
        return self._app(environ, start_response)


application = _Lazy()
