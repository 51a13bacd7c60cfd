"""Small applications for the across-process benchmarks (bench/throughput.py), run by real
servers: ``wsgi_app`` (Flask, under gunicorn with ``gunicorn_conf``) and ``asgi_app`` (Starlette,
under uvicorn). Each has one page, ``GET /``, that increments a counter in the session, and
``GET /healthz``, which touches no session.

The session machinery is chosen by environment variables, read once when a worker imports the app:

| variable | meaning |
|---|---|
| ``BENCH_SESSION`` | ``none``, ``builtin`` (the framework's signed-cookie session), ``flask-session`` (WSGI), ``starsessions`` (ASGI) or ``sessionkeeper`` |
| ``BENCH_STORE`` | the store URL: sessionkeeper's store, or the Redis of Flask-Session and starsessions |
| ``BENCH_WRITE`` | sessionkeeper's write policy, as a ``--write`` string (``end-of-request``, ``time-based:10``) |
| ``BENCH_REPLICATION`` | ``sync:CLUSTER`` or ``async:CLUSTER``: sessionkeeper replicates between the workers over ``BENCH_NATS`` (default the local nats-server) |
| ``BENCH_PREFIX`` | the table prefix (SQL) or key prefix (Redis) of this run, so runs never share data |
"""

from __future__ import annotations

import os
from typing import Any

SECRET = "bench-only-not-secret"


def setting(name: str, default: str = "") -> str:
    return os.environ.get(f"BENCH_{name}", default)


def store_options(url: str, prefix: str) -> dict[str, Any]:
    """sessionkeeper ``store_options`` that keep this run's data apart from every other's."""
    if not prefix:
        return {}
    if url.startswith(("redis://", "rediss://", "unix://")):
        return {"key_prefix": prefix}
    if url.startswith("memory"):
        return {}
    return {"table_prefix": prefix}
