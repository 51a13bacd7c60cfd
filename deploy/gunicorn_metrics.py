"""gunicorn settings for an app that serves sessionkeeper's Prometheus metrics from every worker.

    PROMETHEUS_MULTIPROC_DIR=/run/shop/metrics \\
        gunicorn -c deploy/gunicorn_metrics.py -w 4 shop.wsgi:application

The app mounts ``sessionkeeper.metrics.metrics_app(manager)`` at ``/metrics``. A scrape lands on
one worker, which sums every worker's files in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's
multiprocess mode): counters add up over the workers, dead ones included; gauges count live
workers only, once ``child_exit`` has marked the dead ones. Copy the hooks into your own config
if you have one.

Order matters: the directory must be in the environment before anything imports
``prometheus_client`` (this file is read first, so setting it here works), and must be emptied
before the workers start, or the previous run's counts would be added in.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # One directory per master; set it yourself to keep it somewhere known (a tmpfs).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sessionkeeper-metrics-")
if os.environ.get("SESSIONKEEPER_METRICS_MASTER") != str(os.getpid()):
    # Emptied here, not in on_starting: with --preload the app (and its metrics files) is loaded
    # before on_starting runs. Once per master: a HUP re-reads this file, and the files of the
    # workers it replaces must stay, or their counts would go back to zero.
    os.environ["SESSIONKEEPER_METRICS_MASTER"] = str(os.getpid())
    _directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    _directory.mkdir(parents=True, exist_ok=True)
    for _stale in _directory.glob("*.db"):
        _stale.unlink()


def worker_exit(server: Any, worker: Any) -> None:
    import sessionkeeper
    from sessionkeeper.metrics import push_all

    sessionkeeper.close_all()  # writes every dirty session: counted...
    push_all()  # ...and then pushed into this worker's files before it goes


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # its live* gauges stop counting
