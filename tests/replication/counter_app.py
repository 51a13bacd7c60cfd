"""The README's quick-start counter, with replication and no backups (the channel only), for
``gunicorn -w 4`` in tests: ``SK_TEST_STORE`` and ``SK_TEST_NATS`` name the store and NATS."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import sessionkeeper as sk
from sessionkeeper.wsgi import SessionMiddleware

manager = sk.SessionManager(
    store=os.environ["SK_TEST_STORE"],
    write=sk.TimeBased(interval_s=10),
    replication=sk.Replication(os.environ["SK_TEST_NATS"], replicas=0, cluster="counter"),
)


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    session = environ["sessionkeeper.session"]
    session["visits"] = session.get("visits", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"visits: {session['visits']}\n".encode()]


application = SessionMiddleware(app, manager, app_name="shop")
