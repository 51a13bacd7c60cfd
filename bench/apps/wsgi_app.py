"""The WSGI contender: a Flask app with one page that changes its session (see ``__init__``).

    BENCH_SESSION=sessionkeeper BENCH_STORE=sqlite:////tmp/b.db \\
        gunicorn -c python:bench.apps.gunicorn_conf -b 127.0.0.1:8000 bench.apps.wsgi_app:app
"""

from __future__ import annotations

from typing import Any

import flask

from . import SECRET, setting, store_options

app = flask.Flask(__name__)
app.config.update(SECRET_KEY=SECRET, SESSION_COOKIE_NAME="sid", SESSION_COOKIE_SAMESITE="Lax")
KIND = setting("SESSION", "none")


@app.get("/")
def hit() -> flask.Response:
    if KIND != "none":
        flask.session["hits"] = flask.session.get("hits", 0) + 1
    return flask.Response("ok", mimetype="text/plain")


@app.get("/healthz")
def healthz() -> flask.Response:
    return flask.Response("ok", mimetype="text/plain")


def _configure() -> None:
    if KIND in ("none", "builtin"):
        return  # builtin: Flask's own signed-cookie session
    store, prefix = setting("STORE"), setting("PREFIX")
    if KIND == "flask-session":
        import redis
        from flask_session import Session

        app.config.update(
            SESSION_TYPE="redis",
            SESSION_REDIS=redis.Redis.from_url(store),
            SESSION_KEY_PREFIX=prefix or "session:",
        )
        Session(app)
    elif KIND == "sessionkeeper":
        import sessionkeeper as sk
        from sessionkeeper.flask import SessionKeeper

        manager = sk.SessionManager(
            store,
            write=setting("WRITE", "end-of-request"),
            store_options=store_options(store, prefix),
            replication=replication(),
        )
        SessionKeeper(app, manager=manager, app_name="bench")
    else:
        raise SystemExit(f"BENCH_SESSION={KIND!r}: not a WSGI contender")


def replication() -> Any:
    """``BENCH_REPLICATION=ack:cluster``: replicate over the local nats-server."""
    if not setting("REPLICATION"):
        return None
    import sessionkeeper as sk

    ack, cluster = setting("REPLICATION").split(":", 1)
    url = setting("NATS", "nats://127.0.0.1:4222")
    return sk.Replication(url, ack=ack, cluster=cluster, key=SECRET)  # type: ignore[arg-type]


_configure()
