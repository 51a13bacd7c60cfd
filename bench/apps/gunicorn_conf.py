"""gunicorn settings for the WSGI contender: ``gunicorn -c python:bench.apps.gunicorn_conf``.

4 gthread workers, so that keep-alive connections stay on the worker that accepted them (a sync
worker closes every connection after one response): a load generator that keeps one session per
connection then gets the session affinity a sticky load balancer would give. ``worker_exit`` closes
sessionkeeper's managers, so a SIGTERM flushes dirty sessions before the worker ends.
"""

from __future__ import annotations

from typing import Any

workers = 4
worker_class = "gthread"
threads = 4
keepalive = 5
timeout = 30
graceful_timeout = 10
loglevel = "warning"
accesslog = None


def worker_exit(server: Any, worker: Any) -> None:
    import sys

    if "sessionkeeper" in sys.modules:
        import sessionkeeper

        sessionkeeper.close_all()
