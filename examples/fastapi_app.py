"""A FastAPI app whose sessions survive the worker that served them.

Run (from the repository root):

    .venv/bin/uvicorn --workers 2 --port 8000 examples.fastapi_app:app

Environment: ``SESSIONKEEPER_STORE`` (default ``sqlite:///sessions.db``), ``SESSIONKEEPER_WRITE``
(default ``end-of-request``), ``SESSIONKEEPER_NODE`` (default: host and pid),
``SESSIONKEEPER_SERIALIZE_ACCESS=1``. ``request.session`` works as with Starlette's own
``SessionMiddleware``; housekeeping starts and stops with the lifespan, and shutdown flushes.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from sessionkeeper import SessionManager
from sessionkeeper.asgi import SessionMiddleware

manager = SessionManager(
    os.environ.get("SESSIONKEEPER_STORE", "sqlite:///sessions.db"),
    write=os.environ.get("SESSIONKEEPER_WRITE", "end-of-request"),
    node=os.environ.get("SESSIONKEEPER_NODE") or None,
    serialize_access=os.environ.get("SESSIONKEEPER_SERIALIZE_ACCESS") == "1",
)
app = FastAPI()
app.add_middleware(SessionMiddleware, manager=manager, app_name="fastapi-example")


@app.get("/")
async def show(request: Request) -> dict[str, Any]:
    s = request.session
    return {"n": s.get("n", 0), "user": s.get("user"), "node": manager.node}


@app.post("/incr")
async def incr(request: Request) -> dict[str, Any]:
    request.session["n"] = request.session.get("n", 0) + 1
    return {"n": request.session["n"], "node": manager.node}


@app.post("/login")
async def login(request: Request, user: str = "ann") -> dict[str, Any]:
    # rotate_id writes the session under its new id when it is stored already: off the loop
    await run_in_threadpool(request.session.rotate_id)  # type: ignore[attr-defined]
    request.session["user"] = user
    return {"user": user, "node": manager.node}


@app.post("/logout")
def logout(request: Request) -> dict[str, Any]:  # sync: FastAPI runs it in a thread
    request.session.invalidate()  # type: ignore[attr-defined]
    return {"user": None, "node": manager.node}
