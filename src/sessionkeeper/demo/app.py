"""The demo shop: a WSGI app (no framework) whose cart lives in a sessionkeeper session.

Run one node with gunicorn::

    SESSIONKEEPER_STORE=sqlite:////tmp/shop.db SESSIONKEEPER_NODE=a \\
        gunicorn -w 1 -c python:sessionkeeper.demo.gunicorn_conf sessionkeeper.demo.app:application

| endpoint | what it does |
|---|---|
| ``POST /login?user=NAME`` | rotates the session id (against fixation) and stores the user |
| ``POST /cart/add?item=X&seq=N`` | appends ``{"item": X, "seq": N}`` to the cart |
| ``GET /cart`` | the cart, the orders and the node that served the request, as JSON |
| ``POST /checkout`` | moves the cart into a new order |
| ``GET /healthz`` | ``{"ok": true, "node": ...}``, without touching sessions |
| ``GET /_stats`` | ``manager.stats()`` as JSON (read by ``sessionkeeper stats http://...``) |
| ``GET /_replication`` | ``manager.replication_health()`` as JSON (a rolling restart waits on it) |

Every JSON answer names the serving node, so a client can see failovers. The manager is built
from environment variables the first time a request arrives (so in the worker, after any fork):
``SESSIONKEEPER_STORE`` (required), ``SESSIONKEEPER_NODE``, ``SESSIONKEEPER_WRITE`` (a
``--write`` string, default ``end-of-request``), ``SESSIONKEEPER_ON_WRITE_FAILURE`` (``refuse``
or ``defer``; default: the policy's), ``SESSIONKEEPER_REPLICATION`` (a ``nats://`` URL:
memory-to-memory replication with its defaults) and ``SESSIONKEEPER_CLUSTER`` (the replication
cluster's name, so that two demos on one NATS server stay apart).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs

from ..errors import ConfigurationError
from ..manager import SessionManager
from ..replication import Replication
from ..session import Session
from ..wsgi import ENVIRON_KEY, Environ, SessionMiddleware, StartResponse

APP_NAME = "shop"


def _reply(start_response: StartResponse, status: str, body: Mapping[str, Any]) -> list[bytes]:
    data = json.dumps(body, separators=(",", ":")).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def seqs_of(attributes: Mapping[str, Any]) -> set[int]:
    """Every cart sequence number a session holds, in its cart or in one of its orders."""
    found = {int(line["seq"]) for line in attributes.get("cart") or []}
    for order in attributes.get("orders") or []:
        found.update(int(s) for s in order["seqs"])
    return found


class Shop:
    """The shop's pages. Holds no state of its own: everything is in the session."""

    def __init__(self, node: str) -> None:
        self.node = node

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        session: Session = environ[ENVIRON_KEY]
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        route = {
            ("POST", "/login"): self.login,
            ("POST", "/cart/add"): self.add,
            ("GET", "/cart"): self.cart,
            ("POST", "/checkout"): self.checkout,
        }.get((method, path))
        if route is None:
            return _reply(start_response, "404 Not Found", {"error": "no such page"})
        try:
            status, body = route(session, query)
        except (KeyError, ValueError) as exc:
            status, body = "400 Bad Request", {"error": f"bad parameter: {exc}"}
        return _reply(start_response, status, {**body, "node": self.node})

    def login(self, session: Session, query: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        session.rotate_id()
        session["user"] = query["user"]
        return "200 OK", {"user": query["user"]}

    def add(self, session: Session, query: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        line = {"item": query.get("item", "apple"), "seq": int(query["seq"])}
        # Reassigned rather than appended in place, so the "updated" contents mode sees it.
        session["cart"] = [*session.get("cart", []), line]
        return "200 OK", {"added": line, "items": len(session["cart"])}

    def cart(self, session: Session, query: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        return "200 OK", {
            "user": session.get("user"),
            "cart": session.get("cart", []),
            "orders": session.get("orders", []),
        }

    def checkout(self, session: Session, query: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        cart = session.get("cart", [])
        if not cart:
            return "409 Conflict", {"error": "the cart is empty"}
        orders = session.get("orders", [])
        order = {"order": len(orders) + 1, "seqs": [line["seq"] for line in cart]}
        session["orders"] = [*orders, order]
        session["cart"] = []
        return "200 OK", {"order": order}


class DemoApp:
    """``/healthz`` and ``/_stats`` answered directly; everything else goes to the shop through
    :class:`SessionMiddleware`."""

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager
        self.shop = SessionMiddleware(Shop(manager.node), manager, APP_NAME)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            return _reply(start_response, "200 OK", {"ok": True, "node": self.manager.node})
        if path == "/_stats":
            return _reply(start_response, "200 OK", self.manager.stats())
        if path == "/_replication":
            return _reply(start_response, "200 OK", self.manager.replication_health())
        return self.shop(environ, start_response)


def manager_from_env(env: Mapping[str, str]) -> SessionManager:
    store = env.get("SESSIONKEEPER_STORE")
    if not store:
        raise ConfigurationError("set SESSIONKEEPER_STORE to a store URL, e.g. sqlite:///shop.db")
    url = env.get("SESSIONKEEPER_REPLICATION")
    cluster = env.get("SESSIONKEEPER_CLUSTER")
    replication = Replication(url, cluster=cluster) if url and cluster else url or None
    return SessionManager(
        store,
        write=env.get("SESSIONKEEPER_WRITE") or "end-of-request",
        node=env.get("SESSIONKEEPER_NODE") or None,
        on_write_failure=env.get("SESSIONKEEPER_ON_WRITE_FAILURE") or None,  # type: ignore[arg-type]
        replication=replication,
    )


class _FromEnvironment:
    """Builds the app on the first request, in the process that serves it."""

    def __init__(self) -> None:
        self._app: DemoApp | None = None
        self._lock = threading.Lock()

    def get(self) -> DemoApp:
        if self._app is None:
            with self._lock:
                if self._app is None:
                    self._app = DemoApp(manager_from_env(os.environ))
        return self._app

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return self.get()(environ, start_response)


application = _FromEnvironment()
