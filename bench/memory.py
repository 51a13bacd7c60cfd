"""Section: memory per cached session (issue 6), beside the same data in other in-process holders.

``sessions`` sessions, each with five small attributes, are created in one holder, in a fresh
process per holder (``python -m bench.memory --holder KEY --sessions N``), and the growth of the
process's resident memory (after a collection) is divided by the sessions: everything the holder
keeps per session, its id, data and bookkeeping, and the allocator's overhead. (``tracemalloc``
would count more finely but makes building 100,000 sessions ten times slower.) Holders:

- plain dicts: ``{id: {five attributes}}``, the floor;
- sessionkeeper's cache alone: a manager on a ``MemoryStore`` with ``cache_size`` = ``sessions``,
  ``Manual()`` and ``save_on_create=False``, so nothing reaches the store;
- sessionkeeper's cache plus the ``MemoryStore``'s copy: the same under ``TimeBased(10)``, each
  session written at creation (what one process holds when it is its own store);
- Django's ``cache`` session backend on ``LocMemCache`` (what its ``SessionStore.save`` puts
  there: the pickled session dict under its cache key, with an expiry);
- Flask-Session's ``cachelib`` backend on a ``SimpleCache`` (through its interface's own upsert);
- sessionkeeper's cache alone as it was before ``Session`` became a ``dict``
  (:mod:`bench.baseline`), measured in the same run, for the ratio after / before.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sessionkeeper as sk

from . import baseline
from .report import BenchConfig, Section, SectionResult, Table, Verdict, ratio

FULL_SESSIONS = 100_000
QUICK_SESSIONS = 2_000
TARGET_BYTES = 1_000  # issue 11


def attributes(i: int) -> dict[str, Any]:
    """About five small attributes, different per session (so that nothing is shared by chance)."""
    return {
        "user_id": 100_000 + i,
        "name": f"user{i}",
        "cart": [f"item{i % 97}", "pear"],
        "theme": "dark",
        "visits": i % 100,
    }


@dataclass
class Measured:
    label: str
    bytes_total: int
    sessions: int
    note: str = ""

    @property
    def per_session(self) -> float:
        return self.bytes_total / self.sessions


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def grown(fill: Callable[[int], Any], n: int) -> int:
    """How much this process's resident memory grew while ``fill(n)`` built its holder (kept
    alive while measuring). Imports happen in a warm-up ``fill(1)`` first."""
    fill(1)
    gc.collect()
    before = rss_bytes()
    holder = fill(n)
    gc.collect()
    after = rss_bytes()
    del holder
    return after - before


def fill_dicts(n: int) -> Any:
    import secrets

    return {secrets.token_urlsafe(24): attributes(i) for i in range(n)}


def _fill_manager(write: sk.WritePolicy, save_on_create: bool) -> Callable[[int], Any]:
    def fill(n: int) -> Any:
        manager = sk.SessionManager(
            sk.MemoryStore(),
            write=write,
            cache_size=n,
            save_on_create=save_on_create,
            node="bench",
            housekeeping=False,
        )
        for i in range(n):
            with manager.request("bench", None) as session:
                session.update(attributes(i))
        if manager.stats()["evictions"] or manager.stats()["live"] != n:
            raise AssertionError(f"{manager.stats()['live']} sessions cached, expected {n}")
        return manager

    return fill


def fill_django_cache(n: int) -> Any:
    """What ``django.contrib.sessions.backends.cache.SessionStore.save`` stores: the session dict
    under ``django.contrib.sessions.cache<key>``, pickled by ``LocMemCache``."""
    import secrets

    from django.core.cache.backends.locmem import LocMemCache

    cache = LocMemCache(f"bench-{id(object())}", {"OPTIONS": {"MAX_ENTRIES": n + 1}})
    prefix = "django.contrib.sessions.cache"
    for i in range(n):
        cache.set(prefix + secrets.token_hex(16), attributes(i), 1_209_600)  # SESSION_COOKIE_AGE
    return cache


def fill_flask_session(n: int) -> Any:
    import datetime as dt
    import secrets

    import flask
    from cachelib import SimpleCache
    from flask_session import Session
    from flask_session.base import ServerSideSession

    app = flask.Flask("bench")
    app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=SimpleCache(threshold=n + 1))
    Session(app)
    interface = app.session_interface
    lifetime = dt.timedelta(days=31)
    for i in range(n):
        sid = secrets.token_urlsafe(32)
        session = ServerSideSession(attributes(i), sid=sid)
        interface._upsert_session(lifetime, session, interface.key_prefix + sid)  # type: ignore[attr-defined]
    return app


HOLDERS: dict[str, tuple[str, Callable[[int], Any]]] = {
    "dicts": ("plain dicts {id: {attributes}}", fill_dicts),
    "sk-cache": ("sessionkeeper: cache only", _fill_manager(sk.Manual(), False)),
    "sk-store": ("sessionkeeper: cache + MemoryStore copy", _fill_manager(sk.TimeBased(10), True)),
    "django": ("Django `cache` backend (LocMemCache)", fill_django_cache),
    "flask-session": ("Flask-Session `cachelib` (SimpleCache)", fill_flask_session),
}


def start_worker(key: str, n: int, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``env``: the worker's environment (default: this one, with the bench on the path)."""
    root = Path(__file__).resolve().parent.parent
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "bench.memory", "--holder", key, "--sessions", str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=root,
        env=env or {**os.environ, "PYTHONPATH": path},
    )


def start_baseline(n: int) -> subprocess.Popen[str]:
    """The cache-only holder, run on :mod:`bench.baseline`'s source (raises Unavailable)."""
    return start_worker("sk-cache", n, baseline.env(baseline.baseline_src()))


def collect_worker(proc: subprocess.Popen[str]) -> int:
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError("took more than 600 s") from None
    if proc.returncode != 0:
        tail = (stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(tail)
    return int(json.loads(stdout.strip().splitlines()[-1])["bytes"])


def run(config: BenchConfig) -> SectionResult:
    n = QUICK_SESSIONS if config.quick else FULL_SESSIONS
    result = SectionResult(
        "Memory per cached session",
        f"{n:,} sessions with five small attributes (an int, a short string, a two-item list, "
        "...) in one holder, a fresh process per holder; *bytes per session* is the growth of "
        "the process's resident memory after a collection, divided by the sessions. "
        "sessionkeeper: one `SessionManager` on a `MemoryStore` with "
        f"`cache_size={n:_}`, sessions created through `manager.request()`. *cache only* writes "
        "nothing (`Manual()`, `save_on_create=False`); *cache + MemoryStore copy* also holds the "
        "store's serialized copy (TimeBased(10), written at creation), as a single process that "
        "is its own store does. Django `cache` and Flask-Session `cachelib` hold what those "
        "backends keep per session in process memory (pickled data, key, expiry); their "
        "request-time session objects do not outlive a request. *before the dict Session* is "
        f"the cache-only holder on the source of commit {baseline.COMMIT} (extracted with "
        "`git archive`), in the same run.",
    )
    measured: list[Measured] = []
    # A full run builds one holder at a time; a quick run (a smoke test) starts them all.
    started = {key: start_worker(key, n) for key in HOLDERS} if config.quick else {}
    for key, (label, _) in HOLDERS.items():
        try:
            proc = started[key] if config.quick else start_worker(key, n)
            measured.append(Measured(label, collect_worker(proc), n))
        except Exception as exc:
            result.notes.append(f"skipped: {label}: {exc}")
    if not measured:
        return result
    before = _measure_baseline(n, result)
    if before is not None:
        measured.append(before)
    _verdicts(measured, before, result)
    floor = measured[0].per_session
    rows = [
        [
            m.label,
            f"{m.sessions:,}",
            f"{m.bytes_total / 2**20:,.1f}",
            f"{m.per_session:,.0f}",
            ratio(m.per_session / floor),
        ]
        for m in measured
    ]
    result.tables.append(
        Table(["holder", "sessions", "MiB", "bytes per session", "vs plain dicts"], rows)
    )
    return result


def _measure_baseline(n: int, result: SectionResult) -> Measured | None:
    label = f"{baseline.LABEL}: cache only"
    try:
        return Measured(label, collect_worker(start_baseline(n)), n)
    except baseline.Unavailable as exc:
        result.notes.append(f"{label}: not measured: {exc}")
    except Exception as exc:
        result.notes.append(f"{label}: failed: {exc}")
    return None


def _verdicts(measured: list[Measured], before: Measured | None, result: SectionResult) -> None:
    after = next((m for m in measured if m.label == HOLDERS["sk-cache"][0]), None)
    if after is None:
        return
    if before is not None:
        result.notes.append(
            f"cache only, after / before the dict Session: {after.per_session:,.0f} / "
            f"{before.per_session:,.0f} B = {ratio(after.per_session / before.per_session)}"
        )
    result.verdicts.append(
        Verdict(
            f"memory per cached session ≤ {TARGET_BYTES:,} B at {FULL_SESSIONS:,} sessions "
            "(cache only)",
            f"{after.per_session:,.0f} B at {after.sessions:,} sessions",
            after.per_session <= TARGET_BYTES and after.sessions >= FULL_SESSIONS,
        )
    )


SECTION = Section("memory", run)


def worker_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--holder", choices=sorted(HOLDERS), required=True)
    parser.add_argument("--sessions", type=int, default=FULL_SESSIONS)
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps({"bytes": grown(HOLDERS[args.holder][1], args.sessions)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
