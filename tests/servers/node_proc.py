"""Node A of the failover test, in a process of its own: ``python -m tests.servers.node_proc
URL OPTIONS_JSON COUNT``.

Serves ``COUNT`` new sessions through the WSGI middleware under ``EndOfRequest``, two requests
each, then prints one JSON line ``{"sessions": {id: contents}}`` and waits to be killed. Every
printed session was acknowledged (a 200 response), so every one must be in the store.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import sessionkeeper as sk
from sessionkeeper.wsgi import SessionMiddleware
from tests.core.wsgi_util import call, environ


def app(env: dict[str, Any], start_response: Any) -> list[bytes]:
    s = env["sessionkeeper.session"]
    step = int(env["PATH_INFO"].strip("/") or 0)
    if step == 0:
        s["cart"] = ["apple", "pear"]
        s["notes"] = "x" * 900  # a session of about 1 KB
    else:
        s["cart"] = [*s["cart"], f"item{step}"]
        s["step"] = step
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(dict(s)).encode()]


def main() -> None:
    url, options, count = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    manager = sk.SessionManager(url, node="a", write=sk.EndOfRequest(), store_options=options)
    wsgi = SessionMiddleware(app, manager, "shop")
    sessions: dict[str, Any] = {}
    for _ in range(count):
        first = call(wsgi, environ("/0"))
        assert first.status == 200 and first.session_id
        second = call(wsgi, environ("/1", cookie=f"sessionid={first.session_id}"))
        assert second.status == 200
        sessions[first.session_id] = json.loads(second.body)
    print(json.dumps({"sessions": sessions}), flush=True)
    time.sleep(120)  # killed long before


if __name__ == "__main__":
    main()
