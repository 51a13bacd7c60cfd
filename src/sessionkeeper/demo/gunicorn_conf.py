"""gunicorn settings for a demo node: ``gunicorn -c python:sessionkeeper.demo.gunicorn_conf``.

One sync worker per node, so a node is one process with one node name and one cache. The worker
builds its session manager as soon as it boots (a bad store URL fails the boot, not the first
request), and ``worker_exit`` closes it, so a SIGTERM flushes every dirty session to the store
before the process ends.
"""

from __future__ import annotations

from typing import Any

import sessionkeeper

workers = 1
worker_class = "sync"
timeout = 30  # seconds a request may take before the master restarts the worker
graceful_timeout = 15  # seconds a SIGTERMed worker gets to finish requests and flush
loglevel = "warning"
accesslog = None


def post_worker_init(worker: Any) -> None:
    from sessionkeeper.demo.app import application

    application.get().manager.start()  # housekeeping and, with replication, the cluster


def worker_exit(server: Any, worker: Any) -> None:
    sessionkeeper.close_all()
