"""Timing WSGI requests in-process: no server, no sockets, one ``perf_counter_ns`` pair per
request around the call, the body's iteration and its ``close()`` (what a server does)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def _start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def call(app: WSGIApp, environ: Environ) -> tuple[str, list[tuple[str, str]], bytes]:
    """One request the way a server makes it; returns status, headers and body (for set-up and
    checks, not timed)."""
    seen: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen[:] = [status, headers]

    body = app(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return seen[0], seen[1], data


def run_requests(app: WSGIApp, environs: Sequence[Environ], n: int, out: list[int]) -> None:
    """Make ``n`` requests, cycling through ``environs`` (each copied outside the timed part, as a
    server builds a fresh one), and append each one's duration in ns to ``out``."""
    perf = time.perf_counter_ns
    start_response = _start_response
    k = len(environs)
    for i in range(n):
        environ = environs[i % k].copy()
        t0 = perf()
        body = app(environ, start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
        out.append(perf() - t0)


@dataclass(frozen=True)
class Summary:
    n: int
    median_us: float
    p99_us: float


def summarize(samples_ns: Sequence[int]) -> Summary:
    ordered = sorted(samples_ns)
    n = len(ordered)
    mid = n // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    p99 = ordered[min(n - 1, int(n * 0.99))]
    return Summary(n, median / 1000, p99 / 1000)


def calibrate(app: WSGIApp, environs: Sequence[Environ], warmup: int) -> float:
    """Warm up with ``warmup`` requests; return their mean duration in seconds."""
    samples: list[int] = []
    gc.collect()
    run_requests(app, environs, warmup, samples)
    return sum(samples[len(samples) // 2 :]) / max(1, len(samples) - len(samples) // 2) / 1e9
