"""The overview's numbers over time: samples the console takes itself (sessions per app, from
the store) and, where it is given the nodes' ``/metrics`` URLs, their write and failover
counters; and the SVG chart of them, drawn here so the page needs no script.

A sample is taken every ``interval_s`` by one background thread (started by the console's first
request, as a manager's housekeeping is) and when the overview asks for a fresh one. The last
``keep`` samples are kept in memory: the chart starts when the console did.
"""

from __future__ import annotations

import itertools
import logging
import threading
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from ..clock import Clock
from ..errors import StoreError
from ..housekeeping import Housekeeper
from ..stores import AppCounts, Store

log = logging.getLogger("sessionkeeper.admin")

#: Counters read from each node's exposition, summed over nodes and labels.
NODE_COUNTERS = {
    "writes": "sessionkeeper_store_writes_total",
    "failovers": "sessionkeeper_failovers_total",
}


@dataclass(frozen=True)
class Sample:
    at: float  # wall clock, seconds
    counts: dict[str, AppCounts]
    writes: float | None  # summed over the nodes that answered; None: no node given or answered
    failovers: float | None
    nodes_up: int

    @property
    def sessions(self) -> int:
        return sum(c.live for c in self.counts.values())


def parse_counters(text: str, names: Sequence[str]) -> dict[str, float]:
    """The sums of ``names`` over every label set in a Prometheus text exposition."""
    out = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        metric = line.split("{", 1)[0].split(" ", 1)[0]
        if metric in out:
            try:
                out[metric] += float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return out


class Sampler:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        metrics_urls: Sequence[str] = (),
        *,
        interval_s: float = 10.0,
        keep: int = 360,
        timeout_s: float = 2.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self.metrics_urls = list(metrics_urls)
        self._timeout_s = timeout_s
        self.interval_s = interval_s
        self._samples: deque[Sample] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._thread = Housekeeper(self._tick, interval_s, "admin-samples")

    def start(self) -> None:
        self._thread.ensure_started()

    def stop(self) -> None:
        self._thread.stop()

    def _tick(self) -> None:
        try:
            self.sample()
        except StoreError as exc:
            log.warning("console sample failed: %s", exc)

    def sample(self) -> Sample:
        """Take a sample now (store counts, then each node's metrics); keep it unless the last
        one kept is less than half an interval old."""
        now = self._clock.time()
        counts = self._store.counts_by_app(now)
        totals: dict[str, float] = {}
        up = 0
        for url in self.metrics_urls:
            try:
                with urllib.request.urlopen(url, timeout=self._timeout_s) as resp:
                    text = resp.read().decode("utf-8", "replace")
            except OSError as exc:
                log.warning("console: cannot scrape %s: %s", url, exc)
                continue
            up += 1
            for metric, value in parse_counters(text, list(NODE_COUNTERS.values())).items():
                totals[metric] = totals.get(metric, 0.0) + value
        s = Sample(
            at=now,
            counts=counts,
            writes=totals.get(NODE_COUNTERS["writes"]) if up else None,
            failovers=totals.get(NODE_COUNTERS["failovers"]) if up else None,
            nodes_up=up,
        )
        with self._lock:
            # Views sample too (their counts are live): kept for the chart only when spaced out,
            # so a page reloaded often does not crowd the chart's window.
            if not self._samples or now - self._samples[-1].at >= self.interval_s / 2:
                self._samples.append(s)
        return s

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)


def series(samples: Sequence[Sample], what: str) -> list[tuple[float, float]]:
    """``(time, value)`` points: ``sessions`` as sampled; a node counter as its rate per second
    between consecutive samples (a counter that went down, a node restarting, counts as 0)."""
    if what == "sessions":
        return [(s.at, float(s.sessions)) for s in samples]
    points = []
    for prev, cur in itertools.pairwise(samples):
        a, b = getattr(prev, what), getattr(cur, what)
        if a is None or b is None or cur.at <= prev.at:
            continue
        points.append((cur.at, max(0.0, b - a) / (cur.at - prev.at)))
    return points


def svg_chart(points: Sequence[tuple[float, float]], title: str, unit: str) -> Markup:
    """A line chart as inline SVG: presentation attributes only (no style attribute, no
    script), so the console's Content-Security-Policy needs no exception for it."""
    w, h, pad = 560, 120, 28
    head = (
        f'<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
        f'<text x="4" y="14" font-size="12" fill="#333">{escape(title)}</text>'
        f'<line x1="{pad}" y1="{h - pad}" x2="{w - 4}" y2="{h - pad}" stroke="#999"/>'
    )
    if len(points) < 2:
        body = f'<text x="{pad}" y="{h // 2}" font-size="12" fill="#777">collecting samples…</text>'
        return Markup(head + body + "</svg>")
    t0, t1 = points[0][0], points[-1][0]
    top = max(v for _, v in points) or 1.0
    span = (t1 - t0) or 1.0

    def xy(t: float, v: float) -> str:
        x = pad + (w - pad - 4) * (t - t0) / span
        y = (h - pad) - (h - pad - 20) * v / top
        return f"{x:.1f},{y:.1f}"

    line = " ".join(xy(t, v) for t, v in points)
    body = (
        f'<polyline points="{line}" fill="none" stroke="#1f6feb" stroke-width="2"/>'
        f'<text x="{w - 4}" y="14" font-size="11" fill="#333" text-anchor="end">'
        f"max {top:.3g}{escape(unit)}, last {points[-1][1]:.3g}{escape(unit)}</text>"
        f'<text x="{pad}" y="{h - 8}" font-size="11" fill="#777">{span:.0f} s</text>'
    )
    return Markup(head + body + "</svg>")
