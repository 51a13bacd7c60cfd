"""A Flask app whose sessions survive the worker that served them.

Run (from the repository root):

    .venv/bin/gunicorn -w 2 -b 127.0.0.1:8000 examples.flask_app:app

Environment: ``SESSIONKEEPER_STORE`` (default ``sqlite:///sessions.db``), ``SESSIONKEEPER_WRITE``
(default ``end-of-request``), ``SESSIONKEEPER_NODE`` (default: host and pid),
``SESSIONKEEPER_SERIALIZE_ACCESS=1``. Then::

    curl -c jar -b jar -X POST localhost:8000/incr; curl -b jar localhost:8000/
"""

from __future__ import annotations

import os
from typing import Any

import flask

from sessionkeeper.flask import SessionKeeper

app = flask.Flask(__name__)
app.config.update(
    SESSIONKEEPER_STORE=os.environ.get("SESSIONKEEPER_STORE", "sqlite:///sessions.db"),
    SESSIONKEEPER_WRITE=os.environ.get("SESSIONKEEPER_WRITE", "end-of-request"),
    SESSIONKEEPER_NODE=os.environ.get("SESSIONKEEPER_NODE") or None,
    SESSIONKEEPER_SERIALIZE_ACCESS=os.environ.get("SESSIONKEEPER_SERIALIZE_ACCESS") == "1",
    SESSIONKEEPER_APP_NAME="flask-example",
    SESSION_COOKIE_NAME="sessionid",
    SESSION_COOKIE_SAMESITE="Lax",
)
keeper = SessionKeeper(app)


def _node() -> str:
    interface = app.extensions["sessionkeeper"]
    return str(interface.manager.node)


@app.get("/")
def show() -> dict[str, Any]:
    return {"n": flask.session.get("n", 0), "user": flask.session.get("user"), "node": _node()}


@app.post("/incr")
def incr() -> dict[str, Any]:
    flask.session["n"] = flask.session.get("n", 0) + 1
    return {"n": flask.session["n"], "node": _node()}


@app.post("/login")
def login() -> dict[str, Any]:
    flask.session.rotate_id()  # type: ignore[attr-defined]  # against session fixation
    flask.session["user"] = flask.request.args.get("user", "ann")
    return {"user": flask.session["user"], "node": _node()}


@app.post("/logout")
def logout() -> dict[str, Any]:
    flask.session.invalidate()  # type: ignore[attr-defined]
    return {"user": None, "node": _node()}
