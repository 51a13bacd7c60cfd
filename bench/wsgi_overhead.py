"""Section: what the WSGI middleware adds to a request, in-process.

Every request presents the cookie of an existing session, reads one attribute and writes it back
(a counter). The same application runs bare (no session), under a hand-written cookie → dict
middleware (the cheapest session a user could write), and under ``SessionMiddleware`` with several
policies and stores. Variants are measured in interleaved rounds so that drift of the machine hits
them alike.
"""

from __future__ import annotations

import gc
import importlib
import secrets
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sessionkeeper as sk
from sessionkeeper.wsgi import SessionMiddleware

from . import baseline, wsgi_baseline
from .report import BenchConfig, Section, SectionResult, Table, Verdict, ratio, us
from .timing import (
    Environ,
    StartResponse,
    WSGIApp,
    calibrate,
    call,
    run_requests,
    summarize,
)
from .wsgi_baseline import Before, Pair

TARGET_ADDED_US = 15.0
TARGET_LABEL = "sessionkeeper TimeBased(10), MemoryStore: cache hit"
BASE_ENVIRON: Environ = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/cart",
    "QUERY_STRING": "",
    "SERVER_NAME": "bench",
    "SERVER_PORT": "80",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "bench",
    "wsgi.url_scheme": "http",
}
RESPONSE_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "2")]


class Skipped(Exception):
    """A variant that cannot run here (a store not installed or not written yet)."""


# -- the application and the peers ----------------------------------------------------------------


def counter_app(session_key: str | None) -> WSGIApp:
    """Reads and writes one session attribute per request; ``None``: touches no session."""

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if session_key is not None:
            session = environ[session_key]
            session["hits"] = session.get("hits", 0) + 1
        start_response("200 OK", RESPONSE_HEADERS)
        return [b"ok"]

    return app


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


class DictSessionMiddleware:
    """The cheapest session a user could write: a cookie naming a dict in this process.
    No expiry, no locking, nothing survives the process."""

    cookie_name = "sid"

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self.sessions: dict[str, dict[str, Any]] = {}

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        sid = _cookie(environ.get("HTTP_COOKIE", ""), self.cookie_name)
        session = self.sessions.get(sid) if sid else None
        if session is not None:
            environ["session"] = session
            return self.app(environ, start_response)
        sid = secrets.token_urlsafe(24)
        environ["session"] = self.sessions[sid] = {}
        cookie = ("Set-Cookie", f"{self.cookie_name}={sid}; Path=/; HttpOnly; SameSite=Lax")

        def new_start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
            return start_response(status, [*headers, cookie], exc)

        return self.app(environ, new_start_response)


# -- variants ---------------------------------------------------------------------------------------


@dataclass
class Variant:
    label: str
    app: WSGIApp
    environs: list[Environ]
    manager: sk.SessionManager | None = None
    close: Callable[[], None] = lambda: None
    samples: list[int] = field(default_factory=list)
    round_medians_us: list[float] = field(default_factory=list)
    writes_per_request: float = 0.0  # store writes while measuring
    misses: int = 0  # cache misses while measuring (0 when every request was a cache hit)


@dataclass(frozen=True)
class Spec:
    label: str
    make: Callable[[str, int, Path], Variant]  # (label, sessions, temp dir); may raise Skipped


def _environs_with_sessions(app: WSGIApp, cookie_name: str, sessions: int) -> list[Environ]:
    """Create ``sessions`` sessions through ``app`` itself; one environ per session's cookie."""
    out: list[Environ] = []
    for _ in range(sessions):
        _, headers, _ = call(app, dict(BASE_ENVIRON))
        set_cookie = next(v for k, v in headers if k == "Set-Cookie")
        value = _cookie(set_cookie.split(";", 1)[0], cookie_name)
        out.append({**BASE_ENVIRON, "HTTP_COOKIE": f"theme=dark; {cookie_name}={value}"})
    return out


def bare(label: str, sessions: int, tmp: Path) -> Variant:
    return Variant(label, counter_app(None), [dict(BASE_ENVIRON)])


def dict_session(label: str, sessions: int, tmp: Path) -> Variant:
    app = DictSessionMiddleware(counter_app("session"))
    return Variant(label, app, _environs_with_sessions(app, app.cookie_name, sessions))


def sessionkeeper(
    policy: sk.WritePolicy, store: Callable[[Path], str | sk.Store]
) -> Callable[[str, int, Path], Variant]:
    def make(label: str, sessions: int, tmp: Path) -> Variant:
        manager = sk.SessionManager(store(tmp), write=policy, node="bench")
        try:
            app = SessionMiddleware(counter_app("sessionkeeper.session"), manager, "bench")
            environs = _environs_with_sessions(app, manager.tracking.cookie_name, sessions)
        except Exception:
            manager.close()
            raise
        return Variant(label, app, environs, manager, manager.close)

    return make


def _memory(tmp: Path) -> sk.Store:
    return sk.MemoryStore()


def _sqlite(tmp: Path) -> str:
    try:
        importlib.import_module("sessionkeeper.stores.sql")
    except Exception as exc:
        raise Skipped(f"sessionkeeper.stores.sql is not importable ({exc})") from exc
    return f"sqlite:///{tmp / 'bench.db'}"


#: The first two are the baselines every other row is compared with.
SPECS: list[Spec] = [
    Spec("bare WSGI app (no session)", bare),
    Spec("dict session (hand-written cookie → dict)", dict_session),
    Spec(TARGET_LABEL, sessionkeeper(sk.TimeBased(interval_s=10), _memory)),
    Spec(
        "sessionkeeper TimeBased(10), SQLite: cache hit", sessionkeeper(sk.TimeBased(10), _sqlite)
    ),
    Spec("sessionkeeper EndOfRequest, MemoryStore", sessionkeeper(sk.EndOfRequest(), _memory)),
    Spec("sessionkeeper EndOfRequest, SQLite file", sessionkeeper(sk.EndOfRequest(), _sqlite)),
]


# -- the run ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    sessions: int
    warmup: int
    budget_s: float  # measuring time per variant
    min_requests: int
    max_requests: int
    rounds: int


FULL = Scale(
    sessions=64, warmup=3000, budget_s=4.0, min_requests=4000, max_requests=300_000, rounds=12
)
QUICK = Scale(sessions=8, warmup=300, budget_s=0.15, min_requests=200, max_requests=5000, rounds=2)


def _store_counts(v: Variant) -> tuple[int, int, int]:
    if v.manager is None:
        return 0, 0, 0
    st = v.manager.stats()
    return st["store_sessions_written"], st["cache_hits"], st["cache_misses"]


def run(config: BenchConfig) -> SectionResult:
    scale = QUICK if config.quick else FULL
    result = SectionResult(
        "WSGI middleware: in-process cost per request",
        "Each request presents the cookie of an existing session (one of "
        f"{scale.sessions}, round-robin), reads one attribute and writes it back. The WSGI "
        "callable is called directly with a prepared environ (no HTTP); the timer spans the "
        "call, the body's iteration and `close()`. Warm-up first, then the variants are "
        f"measured in {scale.rounds} interleaved rounds. *added* is the median minus the bare "
        "app's median; ratios compare medians. Other processes share this machine: *added, "
        "quietest round* is the smallest per-round difference of medians, the cost with the "
        "least interference. The last two rows run the TimeBased(10) cache hit in a worker "
        f"process each, one on this tree and one on the source of commit {baseline.COMMIT} "
        "(before the dict Session), with one manager, a round of each after each round here; "
        "their *added* is against their own bare app.",
    )
    variants: list[Variant] = []
    remote: Pair | None = None
    with tempfile.TemporaryDirectory(prefix="sk-bench-") as tmp:
        try:
            for spec in SPECS:
                try:
                    variants.append(spec.make(spec.label, scale.sessions, Path(tmp)))
                except Skipped as exc:
                    result.notes.append(f"skipped: {spec.label}: {exc}")
                except Exception as exc:  # a store being written right now may fail to open
                    result.notes.append(f"skipped: {spec.label}: {type(exc).__name__}: {exc}")
            remote = _start_remote(scale, result)
            pair = _measure(variants, scale, remote, result)
            result.tables.append(_table(variants, result, pair))
        finally:
            for v in variants:
                v.close()
            if remote is not None:
                remote.close()
    return result


def _start_remote(scale: Scale, result: SectionResult) -> Pair | None:
    try:
        return Pair(scale.sessions, scale.warmup)
    except baseline.Unavailable as exc:
        result.notes.append(f"{baseline.LABEL}: not measured: {exc}")
    except Exception as exc:
        result.notes.append(f"{baseline.LABEL}: failed: {exc}")
    return None


def _per_round(cost_s: float, scale: Scale) -> int:
    n = int(scale.budget_s / max(cost_s, 1e-9))
    return max(scale.min_requests, min(scale.max_requests, n)) // scale.rounds


def _measure(
    variants: list[Variant], scale: Scale, remote: Pair | None, result: SectionResult
) -> tuple[Before, Before] | None:
    """Interleaved rounds: each variant here, then the workers' (``remote``), after and
    before."""
    per_round = {
        i: _per_round(calibrate(v.app, v.environs, scale.warmup), scale)
        for i, v in enumerate(variants)
    }
    before = {i: _store_counts(v) for i, v in enumerate(variants)}
    for _ in range(scale.rounds):
        for i, v in enumerate(variants):
            gc.collect()
            start = len(v.samples)
            run_requests(v.app, v.environs, per_round[i], v.samples)
            v.round_medians_us.append(summarize(v.samples[start:]).median_us)
        try:
            if remote is not None:
                remote.round(lambda cost_s: _per_round(cost_s, scale))
        except RuntimeError as exc:
            result.notes.append(f"{baseline.LABEL}: failed: {exc}")
            remote = None
    after = {i: _store_counts(v) for i, v in enumerate(variants)}
    for i, v in enumerate(variants):
        v.writes_per_request = (after[i][0] - before[i][0]) / len(v.samples)
        v.misses = after[i][2] - before[i][2]
    try:
        return remote.end() if remote is not None else None
    except RuntimeError as exc:
        result.notes.append(f"{baseline.LABEL}: failed: {exc}")
        return None


def _table(
    variants: list[Variant], result: SectionResult, pair: tuple[Before, Before] | None
) -> Table:
    bare_v, dict_v = variants[0], variants[1]
    bare_s, dict_s = summarize(bare_v.samples), summarize(dict_v.samples)
    rows: list[list[str]] = []
    for v in variants:
        s = summarize(v.samples)
        added = s.median_us - bare_s.median_us
        quiet = min(m - b for m, b in zip(v.round_medians_us, bare_v.round_medians_us, strict=True))
        rows.append(
            [
                v.label,
                f"{s.n:,}",
                us(s.median_us),
                us(s.p99_us),
                "-" if v is bare_v else us(added),
                "-" if v is bare_v else us(quiet),
                ratio(s.median_us / dict_s.median_us),
                ratio(s.median_us / bare_s.median_us),
                "-" if v.manager is None else f"{v.writes_per_request:.3f}",
            ]
        )
        if v.manager is not None and v.misses:
            result.notes.append(f"{v.label}: {v.misses} cache misses while measuring")
        if v.label == TARGET_LABEL:
            result.verdicts.append(
                Verdict(
                    f"a cache hit under TimeBased(10) adds < {TARGET_ADDED_US:g} µs per request "
                    "(median)",
                    f"{added:.2f} µs added (quietest round {quiet:.2f} µs; "
                    f"p99 {s.p99_us - bare_s.p99_us:.2f} µs)",
                    added < TARGET_ADDED_US,
                )
            )
    if pair is not None:
        rows += wsgi_baseline.rows(*pair, bare_s.median_us, dict_s.median_us, result)
    return Table(
        [
            "variant",
            "requests",
            "median µs",
            "p99 µs",
            "added µs",
            "added, quietest round",
            "vs dict session",
            "vs no session",
            "store writes/req",
        ],
        rows,
    )


SECTION = Section("wsgi", run)
