"""The WSGI section's before-beside-after rows: the TimeBased(10) cache hit on sessionkeeper
before the dict ``Session`` (:mod:`bench.baseline`) and on this tree, each in a worker process of
its own (one manager, the same harness: the section's own process holds several managers, which
a worker of one source could not match), measured round by round between the section's own.

A worker (``python -m bench.wsgi_baseline``, its source first on its path) builds two variants,
the bare app and the cache hit under ``TimeBased(10)`` on a ``MemoryStore``, and answers one line
of JSON per command it reads: ``calibrate``, ``round`` (one interleaved round of each) and
``end`` (every sample's summary). Its *added* is its own cache hit minus its own bare app.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import baseline
from .report import SectionResult, Verdict, ratio, us
from .timing import calibrate, run_requests, summarize

AFTER_LABEL = "sessionkeeper (this tree) in a worker"


@dataclass
class Before:
    """The worker's figures, as they come in."""

    label: str
    round_medians_us: list[tuple[float, float]] = field(default_factory=list)  # (bare, hit)
    summary: list[tuple[int, float, float]] = field(default_factory=list)  # (n, median, p99)
    misses: int = 0


class Remote:
    """The worker, seen from the section. Raises :class:`baseline.Unavailable` when the old
    source cannot be had, and ``RuntimeError`` when the worker fails."""

    def __init__(self, label: str, src: Path, sessions: int, warmup: int) -> None:
        self.before = Before(f"{label}: TimeBased(10), MemoryStore: cache hit")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.wsgi_baseline", str(sessions)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=baseline.ROOT,
            env=baseline.env(src),
        )
        self.costs_s: list[float] = self._ask(f"calibrate {warmup}")["costs_s"]

    def _ask(self, command: str) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(command + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except OSError:
            line = ""
        if not line:
            self._proc.kill()
            _, err = self._proc.communicate()
            raise RuntimeError((err.strip().splitlines() or ["the worker ended"])[-1])
        answer: dict[str, Any] = json.loads(line)
        return answer

    def round(self, bare_n: int, hit_n: int) -> None:
        medians = self._ask(f"round {bare_n} {hit_n}")["medians_us"]
        self.before.round_medians_us.append((medians[0], medians[1]))

    def end(self) -> Before:
        answer = self._ask("end")
        self.before.summary = [tuple(s) for s in answer["summary"]]  # type: ignore[misc]
        self.before.misses = answer["misses"]
        self._proc.communicate(timeout=60)
        return self.before

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()


class Pair:
    """The two workers, after and before, driven together."""

    def __init__(self, sessions: int, warmup: int) -> None:
        before_src = baseline.baseline_src()  # first: raises Unavailable before starting any
        self.after = Remote(AFTER_LABEL, baseline.ROOT / "src", sessions, warmup)
        try:
            self.before = Remote(baseline.LABEL, before_src, sessions, warmup)
        except BaseException:
            self.after.close()
            raise

    def round(self, per_round: Any) -> None:
        """``per_round(cost_s) -> n``: the requests per round for a variant of that cost."""
        for remote in (self.after, self.before):
            remote.round(*(per_round(c) for c in remote.costs_s))

    def end(self) -> tuple[Before, Before]:
        return self.after.end(), self.before.end()

    def close(self) -> None:
        self.after.close()
        self.before.close()


def rows(
    after: Before, before: Before, bare_us: float, dict_us: float, result: SectionResult
) -> list[list[str]]:
    """The two workers' rows, their ratio after / before (a note) and the verdict. *added* is
    each against its own bare app; the ratios to the dict session and the bare app apply that
    to this process's bare app."""
    added = {}
    out = []
    for figures in (after, before):
        (_, bare, _), (n, hit, p99) = figures.summary
        added[figures.label] = hit - bare
        quiet = min(h - b for b, h in figures.round_medians_us)
        added[figures.label + " quiet"] = quiet
        here = bare_us + hit - bare
        times = [us(hit), us(p99), us(hit - bare), us(quiet)]
        out.append(
            [figures.label, f"{n:,}", *times, ratio(here / dict_us), ratio(here / bare_us), "-"]
        )
        if figures.misses:
            result.notes.append(f"{figures.label}: {figures.misses} cache misses while measuring")
    now, then = added[after.label], added[before.label]
    now_q, then_q = added[after.label + " quiet"], added[before.label + " quiet"]
    result.notes.append(
        f"cache hit, added µs after / before the dict Session (the two workers): median "
        f"{now:.2f} / {then:.2f} = {ratio(now / then)}; quietest round {now_q:.2f} / "
        f"{then_q:.2f} = {ratio(now_q / then_q)}"
    )
    result.verdicts.append(
        Verdict(
            "the cache hit is no slower than before the dict Session (added µs, median, workers)",
            f"{now:.2f} µs after, {then:.2f} µs before ({ratio(now / then)})",
            now <= then,
        )
    )
    return out


def worker_main(sessions: int) -> int:
    import sessionkeeper as sk

    from . import wsgi_overhead as w

    with tempfile.TemporaryDirectory(prefix="sk-bench-before-") as tmp:
        variants = [
            w.bare("bare", sessions, Path(tmp)),
            w.sessionkeeper(sk.TimeBased(interval_s=10), w._memory)("hit", sessions, Path(tmp)),
        ]
        misses_at = 0
        for line in sys.stdin:
            command, *args = line.split()
            if command == "calibrate":
                answer: dict[str, Any] = {
                    "costs_s": [calibrate(v.app, v.environs, int(args[0])) for v in variants]
                }
                assert variants[1].manager is not None
                misses_at = variants[1].manager.stats()["cache_misses"]
            elif command == "round":
                medians = []
                for v, n in zip(variants, args, strict=True):
                    gc.collect()
                    start = len(v.samples)
                    run_requests(v.app, v.environs, int(n), v.samples)
                    medians.append(summarize(v.samples[start:]).median_us)
                answer = {"medians_us": medians}
            else:
                summaries = [summarize(v.samples) for v in variants]
                assert variants[1].manager is not None
                answer = {
                    "summary": [[s.n, s.median_us, s.p99_us] for s in summaries],
                    "misses": variants[1].manager.stats()["cache_misses"] - misses_at,
                }
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
            if command == "end":
                break
        for v in variants:
            v.close()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(int(sys.argv[1])))
