"""Prometheus metrics of this process's session managers (``pip install sessionkeeper[metrics]``).

Mount the exposition at ``/metrics``::

    from sessionkeeper.metrics import metrics_app
    app = DispatcherMiddleware(app, {"/metrics": metrics_app(manager)})  # WSGI (werkzeug)
    starlette_app.mount("/metrics", metrics_app(manager, asgi=True))    # ASGI

Every counter of ``manager.stats()`` becomes a ``_total`` counter and its gauges become gauges, in
base units (:data:`COUNTERS`, :data:`GAUGES`); store operation latency is a histogram fed by the
store's ``observer`` hook, in the thread that made the call. Labels are bounded (``reason``,
``result``, ``trigger``, ``outcome``, ``code``, ``op``); the node is the scrape instance, never a
label. ``app`` is not a label: the manager counts per process, not per app.

How values get in: ``stats()`` counts since the manager started; the exporter *adds what each
count grew by* since it last looked to a prometheus-client ``Counter`` (gauges are set). Deltas,
not a collector reading ``stats()`` at scrape time, because that is what lets gunicorn's workers
add up: in prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before anything
imports it) each worker's values live in its own files, which outlive it, and a scrape served by
any worker sums them. When values are pushed: a scrape first pushes its own process (exact in a
single process); in multiprocess mode a thread per process pushes every ``push_interval_s``, a
fork pushes first (a child then adds only what it counts itself), and so do gunicorn's
``worker_exit`` (:func:`push_all`, after ``close_all()``) and a normal interpreter exit. Gauges
use the ``live*`` modes (``child_exit`` calls ``mark_process_dead``): sessions sum over workers,
ages and latency take the largest, ``store_up`` the smallest. See ``deploy/gunicorn_metrics.py``.

Only this module imports ``prometheus_client``, and only when an exporter is first built.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Literal, overload

from .housekeeping import Housekeeper
from .metricfamilies import (
    COUNTERS,
    COVERED,
    GAUGES,
    LATENCY_BUCKETS_S,
    PREFIX,
    REPLICATION_BUCKETS_S,
    REPLICATION_COUNTERS,
    REPLICATION_GAUGES,
    Family,
    Mode,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .manager import SessionManager
    from .stores import Store

__all__ = [
    "COUNTERS", "COVERED", "GAUGES", "PREFIX", "REPLICATION_COUNTERS", "REPLICATION_GAUGES",
    "Exporter", "Family", "default_exporter", "metrics_app", "push_all",
]  # fmt: skip
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def multiprocess() -> bool:
    """Whether prometheus-client runs in multiprocess mode (decided when it is first imported)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:  # pragma: no cover - the extra is part of the dev install
        raise ImportError(
            "sessionkeeper.metrics needs prometheus-client: pip install 'sessionkeeper[metrics]'"
        ) from exc
    return prometheus_client


class Exporter:
    """The prometheus-client metrics of one registry, and the managers pushed into them.

    Thread safety: :meth:`push` runs under a lock, so a scrape and the push thread never add one
    difference twice. A manager is held weakly: one that is garbage collected stops being pushed.
    In single-process mode the metrics are registered in ``registry`` (default: prometheus-client's
    global one); in multiprocess mode in none, since a scrape reads every worker's files."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, push_interval_s: float = 5.0
    ) -> None:
        pc = _prometheus()
        self.multiprocess = multiprocess()
        self.registry = registry if registry is not None else pc.REGISTRY
        target = None if self.multiprocess else self.registry
        self._target = target
        self._counters = {f.name: _counter(pc, f, target) for f in COUNTERS}
        self._gauges = {f.name: _gauge(pc, f, target) for f in GAUGES}
        self._acks: Any = None  # replication's families, made when a replicating manager is added
        self._latency = pc.Histogram(
            PREFIX + "store_operation_duration_seconds",
            "Store operation attempts, by operation (load, save, touch, delete, ...)",
            ["op"],
            buckets=LATENCY_BUCKETS_S,
            registry=target,
        )
        self._info = pc.Gauge(
            PREFIX + "info",
            "1, labelled with the version, the write policy and the store kind",
            ["version", "policy", "store"],
            registry=target,
            multiprocess_mode="livemax",
        )
        self._managers: weakref.WeakKeyDictionary[SessionManager, dict[str, float]]
        self._managers = weakref.WeakKeyDictionary()
        self._store_seen: weakref.WeakKeyDictionary[Store, dict[str, float]]
        self._store_seen = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._pusher = Housekeeper(self.push, push_interval_s, "metrics")
        _exporters.add(self)

    def add(self, manager: SessionManager) -> None:
        """Export ``manager``'s counts (those since it started) and time its store's operations.
        In multiprocess mode, start this process's push thread (restarted in every forked child)."""
        from . import __version__

        with self._lock:
            if manager in self._managers:
                return
            self._managers[manager] = {}
            if manager.store not in self._store_seen:
                self._store_seen[manager.store] = {}
                manager.store.observer = self._observer(manager.store.observer)
            replicator = manager._replicator
            if replicator is not None:
                self._add_replication()
                replicator.observer = self._acks.observe
        self._info.labels(__version__, manager.policy.spec(), manager.store.kind).set(1)
        if self.multiprocess:
            self._pusher.ensure_started()

    def _add_replication(self) -> None:
        """Replication's families, in this exporter from the first manager that replicates."""
        if self._acks is not None:
            return
        pc, target = _prometheus(), self._target
        self._counters.update({f.name: _counter(pc, f, target) for f in REPLICATION_COUNTERS})
        self._gauges.update({f.name: _gauge(pc, f, target) for f in REPLICATION_GAUGES})
        self._acks = pc.Histogram(
            PREFIX + "replication_ack_duration_seconds",
            "Waits for a backup's acknowledgement of a delta or copy (answered ones)",
            buckets=REPLICATION_BUCKETS_S,
            registry=target,
        )

    def _observer(
        self, previous: Callable[[str, float, bool], None] | None
    ) -> Callable[[str, float, bool], None]:
        latency = self._latency

        def observe(op: str, elapsed_s: float, error: bool) -> None:
            latency.labels(op).observe(elapsed_s)
            if previous is not None:
                previous(op, elapsed_s, error)

        return observe

    def push(self) -> None:
        """Add to each counter what its ``stats()`` key grew by since the last push, and set the
        gauges: summed over this process's managers, or their worst (the family's mode). A store
        shared by several managers is counted once."""
        with self._lock:
            gauges = GAUGES + (REPLICATION_GAUGES if self._acks is not None else ())
            values: dict[str, list[float]] = {f.name: [] for f in gauges}
            pushed: set[int] = set()
            for manager, seen in list(self._managers.items()):
                stats = manager.stats()
                store_seen = self._store_seen.setdefault(manager.store, {})
                replicates = manager._replicator is not None
                for family in COUNTERS + (REPLICATION_COUNTERS if replicates else ()):
                    if not family.of_store:
                        self._add_deltas(family, stats, seen)
                    elif id(manager.store) not in pushed:
                        self._add_deltas(family, stats, store_seen)
                pushed.add(id(manager.store))
                for family in GAUGES + (REPLICATION_GAUGES if replicates else ()):
                    (key,) = family.keys
                    values[family.name].append(float(stats.get(key, 0)))
            for family in gauges:
                if values[family.name]:
                    self._gauges[family.name].set(_combine(family.mode, values[family.name]))

    def _add_deltas(self, family: Family, stats: Mapping[str, Any], seen: dict[str, float]) -> None:
        counter = self._counters[family.name]
        for key, label in family.keys.items():
            value = stats.get(key, 0)
            delta = value - seen.get(key, 0)
            if delta > 0:
                (counter.labels(label) if family.label else counter).inc(delta)
            seen[key] = value

    def expose(self) -> tuple[bytes, str]:
        """Push this process's managers, then the text exposition and its content type."""
        pc = _prometheus()
        self.push()
        registry = self.registry
        if self.multiprocess:
            from prometheus_client import multiprocess as mp

            registry = pc.CollectorRegistry()
            mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return bytes(pc.generate_latest(registry)), str(pc.CONTENT_TYPE_LATEST)

    def wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        body, content_type = self.expose()
        start_response("200 OK", _headers(body, content_type))
        return [body if method == "GET" else b""]

    async def asgi(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":  # served on its own, not mounted
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        method = scope.get("method", "GET")
        status, body, headers = 405, b"", [(b"allow", b"GET, HEAD")]
        if method in ("GET", "HEAD"):
            # Only memory to read (and, in multiprocess mode, a few small files): fast enough to
            # run on the event loop.
            body, content_type = self.expose()
            status = 200
            headers = [(k.lower().encode(), v.encode()) for k, v in _headers(body, content_type)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body if method == "GET" else b""})

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a parent thread may have held it at the fork
        # A manager's counters start from zero in a child (stats.Stats resets at the fork); the
        # store's go on from the parent's, so what was last pushed of them stays the baseline.
        for manager in list(self._managers):
            self._managers[manager] = {}
        if self.multiprocess and self._managers:
            self._pusher.ensure_started()


def _counter(pc: Any, family: Family, registry: CollectorRegistry | None) -> Any:
    labels = [family.label] if family.label else []
    counter = pc.Counter(PREFIX + family.name, family.help, labels, registry=registry)
    for label in family.keys.values() if family.label else ():
        counter.labels(label)  # every series exists from the start, so rate() sees the first one
    return counter


def _gauge(pc: Any, family: Family, registry: CollectorRegistry | None) -> Any:
    return pc.Gauge(
        PREFIX + family.name, family.help, registry=registry, multiprocess_mode=family.mode
    )


def _combine(mode: Mode, values: list[float]) -> float:
    return sum(values) if mode == "livesum" else max(values) if mode == "livemax" else min(values)


def _headers(body: bytes, content_type: str) -> list[tuple[str, str]]:
    return [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
    ]


_exporters: weakref.WeakSet[Exporter] = weakref.WeakSet()
_default: Exporter | None = None
_default_lock = threading.Lock()


def default_exporter() -> Exporter:
    """The exporter of prometheus-client's global registry, built on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Exporter()
        return _default


@overload
def metrics_app(
    *managers: SessionManager, asgi: Literal[False] = False, exporter: Exporter | None = None
) -> WSGIApp: ...
@overload
def metrics_app(
    *managers: SessionManager, asgi: Literal[True], exporter: Exporter | None = None
) -> ASGIApp: ...
def metrics_app(
    *managers: SessionManager, asgi: bool = False, exporter: Exporter | None = None
) -> WSGIApp | ASGIApp:
    """The exposition of ``managers`` (added to ``exporter``, default :func:`default_exporter`),
    as a WSGI app, or an ASGI one with ``asgi=True``, to mount at ``/metrics``."""
    exporter = exporter if exporter is not None else default_exporter()
    for manager in managers:
        exporter.add(manager)
    return exporter.asgi if asgi else exporter.wsgi


def push_all() -> None:
    """Push every exporter of this process now: call it in gunicorn's ``worker_exit`` after
    ``sessionkeeper.close_all()``, so the final flush's counts reach the worker's files."""
    for exporter in list(_exporters):
        exporter.push()


def _before_fork() -> None:
    # A child inherits the managers' counts and what was last pushed of them: push first, so
    # that what the parent counted stays the parent's and the child adds only its own.
    for exporter in list(_exporters):
        if exporter.multiprocess:
            exporter.push()


def _after_fork_in_child() -> None:
    for exporter in list(_exporters):
        exporter._after_fork()


def _at_exit() -> None:
    """At a normal exit (no worker exit hook needed): close the managers first, so that their last
    flush is counted (registered after the manager's own ``close_all``, this runs before it),
    push, and drop this process's live gauges, as gunicorn's ``child_exit`` would."""
    exporters = [e for e in list(_exporters) if e.multiprocess]
    if not exporters:
        return
    from prometheus_client import multiprocess as mp

    from .manager import close_all

    close_all()
    for exporter in exporters:
        exporter.push()
    mp.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
