"""Section: ``EndOfRequest`` against each store's floor, side by side in one run.

The *floor* is what the store itself needs for one session write: a single-row upsert of a
~100-byte value keyed by token, in its own transaction, through the raw driver (sqlite3, psycopg,
PyMySQL; ``SET`` on Redis). Beside it, one changed request through a ``SessionManager`` with
``EndOfRequest``: ``SESSIONS`` sessions, each request incrementing a counter in one of them,
round robin, so every request writes. The ratio is the manager's time per request over the
floor's. On PostgreSQL and MariaDB the server's own counters (a database or user per run, see
:mod:`.storecounters`) give the statements and commits per changed request.

``python -m bench floor`` runs this section alone.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sessionkeeper as sk

from .report import BenchConfig, Section, SectionResult, Table, Verdict
from .storecounters import Counters, StoreServers, unique_prefix

SESSIONS = 50
#: Goals: the manager's time per changed request over the floor's.
GOALS = {"sqlite": 3.0, "postgres": 1.5, "mysql": 1.5, "redis": 1.5}
LABELS = {"sqlite": "SQLite", "postgres": "PostgreSQL", "mysql": "MariaDB", "redis": "Redis"}
#: Timed rounds per side; the quickest is reported (the machine is shared).
ROUNDS = 3
VALUE = b"x" * 100


def _value(i: int) -> bytes:
    # A new value each time, as a counter: MariaDB commits nothing for an upsert that changes
    # nothing, which would make the floor a no-op.
    return b"%d:" % i + VALUE


def _timed_us(n: int, fn: Callable[[int], None]) -> tuple[float, float]:
    """One round of ``n`` calls of ``fn(i)``: wall time and this process's CPU time (user and
    system), in µs per call. The CPU time is the client's own cost, which the machine's load
    inflates far less than the wall time (it leaves out the server's work and every wait)."""
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - started) / n * 1e6, (time.process_time() - cpu) / n * 1e6


# -- the floor: the raw driver ---------------------------------------------------------------------


def _mysql_connect(url: str) -> Any:
    import pymysql

    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=parts.path.lstrip("/") or None,
    )


@contextlib.contextmanager
def _raw_upsert(
    kind: str, url: str, prefix: str, *, create: bool = False
) -> Iterator[Callable[[int], None]]:
    """``upsert(i)``: one row's upsert and commit on a connection of its own, closed afterwards.
    ``create``: the table is created first and dropped afterwards."""
    table = f"{prefix}floor"
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(url)

        def set_one(i: int) -> None:
            client.set(f"{prefix}{i % SESSIONS}", _value(i))

        try:
            yield set_one
        finally:
            if create:
                client.delete(*(f"{prefix}{i}" for i in range(SESSIONS)))
            client.close()
        return
    if kind == "sqlite":
        import sqlite3

        conn: Any = sqlite3.connect(urlsplit(url).path[1:], isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        ddl = f"CREATE TABLE {table} (token VARCHAR(64) PRIMARY KEY, value BLOB)"
        upsert = (
            f"INSERT INTO {table} VALUES (?, ?) "
            "ON CONFLICT (token) DO UPDATE SET value = excluded.value"
        )
    elif kind == "postgres":
        import psycopg

        conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1))
        ddl = f"CREATE TABLE {table} (token VARCHAR(64) PRIMARY KEY, value BYTEA)"
        upsert = (
            f"INSERT INTO {table} VALUES (%s, %s) "
            "ON CONFLICT (token) DO UPDATE SET value = excluded.value"
        )
    else:
        conn = _mysql_connect(url)
        ddl = f"CREATE TABLE {table} (token VARCHAR(64) PRIMARY KEY, value BLOB)"
        upsert = (
            f"INSERT INTO {table} VALUES (%s, %s) ON DUPLICATE KEY UPDATE value = VALUES(value)"
        )
    cur = conn.cursor()
    if create:
        cur.execute(ddl)
        conn.commit()

    def one(i: int) -> None:
        if kind == "sqlite":
            cur.execute("BEGIN IMMEDIATE")
        cur.execute(upsert, (f"floor{i % SESSIONS:027d}", _value(i)))
        conn.commit() if kind != "sqlite" else cur.execute("COMMIT")

    try:
        yield one
    finally:
        if create:
            cur.execute(f"DROP TABLE {table}")
            conn.commit()
        conn.close()


# -- the manager -----------------------------------------------------------------------------------


def _manager_requests(store: sk.stores.Store) -> tuple[sk.SessionManager, Callable[[int], None]]:
    manager = sk.SessionManager(store, write=sk.EndOfRequest(), node="bench", housekeeping=False)
    ids: list[str | None] = [None] * SESSIONS
    for i in range(SESSIONS):  # the creations, outside the timed rounds
        with manager.request("bench") as session:
            session["n"] = 0
            ids[i] = session.id

    def one(i: int) -> None:
        with manager.request("bench", ids[i % SESSIONS]) as session:
            session["n"] = session["n"] + 1

    return manager, one


def _open_store(kind: str, url: str, prefix: str) -> sk.stores.Store:
    from sessionkeeper.stores import open_store

    if kind == "redis":
        return open_store(url, key_prefix=prefix)
    return open_store(url, table_prefix=prefix)


def _settled(store: sk.stores.Store | None, counters: Counters | None) -> dict[str, float]:
    """The server's counters once every connection so far is closed: PostgreSQL publishes a
    backend's commits when it goes idle for a while or exits (the pool opens new ones)."""
    if counters is None:
        return {}
    engine = getattr(store, "engine", None)
    if engine is not None:
        engine.dispose()
    counters.settle()
    return counters.read()


def _per_call(before: dict[str, float], after: dict[str, float], calls: int) -> str:
    """``statements / commits`` per call, from the server's counters."""
    if not after:
        return "-"
    per = {k: (after[k] - before.get(k, 0.0)) / calls for k in after}
    return f"{per.get('statements', float('nan')):.2f} / {per.get('commits', float('nan')):.2f}"


def _counted(fn: Callable[[int], None], n: int, store: Any, counters: Counters | None) -> str:
    """``statements / commits`` per call of ``fn`` over ``n`` calls, from the server."""
    if counters is None:
        return "-"
    before = _settled(store, counters)
    for i in range(n):
        fn(i)
    after = _settled(store, counters)
    return _per_call(before, after, n)


def _counted_floor(kind: str, url: str, prefix: str, n: int, counters: Counters | None) -> str:
    """As :func:`_counted`, the floor on a connection of its own, closed before the reading
    (PostgreSQL publishes a backend's commits late, or when it exits)."""
    if counters is None:
        return "-"
    before = _settled(None, counters)
    with _raw_upsert(kind, url, prefix) as upsert:
        for i in range(n):
            upsert(i)
    return _per_call(before, _settled(None, counters), n)


def measure(kind: str, url: str, counters: Counters | None, n: int) -> list[str]:
    """One table row: floor, manager, ratio, statements and commits per call of each. The two
    sides' timed rounds alternate, so that a busy moment of the machine falls on both; the
    counting is a separate, untimed pass of each."""
    prefix = unique_prefix("redis" if kind == "redis" else "sql")
    store = _open_store(kind, url, prefix)
    manager, request = _manager_requests(store)
    try:
        with _raw_upsert(kind, url, prefix, create=True) as setup:
            setup(0)
            with _raw_upsert(kind, url, prefix) as upsert:
                request(0)
                floors, ourss = [], []
                for _ in range(ROUNDS):
                    floors.append(_timed_us(n, upsert))
                    ourss.append(_timed_us(n, request))
                floor, ours = min(floors)[0], min(ourss)[0]
                floor_cpu = min(c for _, c in floors)
                ours_cpu = min(c for _, c in ourss)
            floor_counts = _counted_floor(kind, url, prefix, n, counters)
            our_counts = _counted(request, n, store, counters)
    finally:
        manager.close()
        store.close()
    return [
        LABELS[kind],
        f"{floor:,.0f} µs",
        f"{ours:,.0f} µs",
        f"{ours / floor:.1f}x",
        f"{floor_cpu:,.0f} / {ours_cpu:,.0f} µs",
        floor_counts,
        our_counts,
    ]


def run(config: BenchConfig) -> SectionResult:
    n = 100 if config.quick else 500
    result = SectionResult(
        title="EndOfRequest at the store's floor",
        intro=(
            f"Per store: the raw driver's single-row upsert and commit, and one changed request "
            f"through a manager with `EndOfRequest` ({SESSIONS} sessions, a counter incremented "
            f"per request), each the quickest of {ROUNDS} rounds of {n}, the two sides' rounds "
            "alternating; *client CPU* is this process's CPU time per call (quickest round), "
            "which a loaded machine inflates less than the wall time. Statements and commits per "
            "changed request from the server's counters (counted on the run's own database or "
            "user, so they include nothing else)."
        ),
    )
    rows: list[list[str]] = []
    with StoreServers() as servers, tempfile.TemporaryDirectory() as tmp:
        for kind in ("sqlite", "postgres", "mysql", "redis"):
            counters: Counters | None = None
            try:
                if kind == "sqlite":
                    url = f"sqlite:///{Path(tmp) / 'floor.db'}"
                else:
                    reason = servers.unavailable_reason(kind)
                    if reason:
                        result.notes.append(f"skipped {LABELS[kind]}: {reason}")
                        continue
                    if kind in ("postgres", "mysql"):
                        counters = servers.counters(kind, unique_prefix("skf"))
                        url = counters.prepare()
                    else:
                        url = servers.url(kind)
                row = measure(kind, url, counters, n)
            except Exception as exc:  # a server that fails mid-run: say so, keep the others
                result.notes.append(f"{LABELS[kind]} failed: {type(exc).__name__}: {exc}")
                continue
            finally:
                if counters is not None:
                    with contextlib.suppress(Exception):
                        counters.cleanup()
            rows.append(row)
            goal = GOALS[kind]
            measured = float(row[3].rstrip("x"))
            result.verdicts.append(
                Verdict(f"{LABELS[kind]} ≤ {goal:g}x its floor", row[3], measured <= goal)
            )
    result.tables.append(
        Table(
            [
                "store",
                "floor (raw upsert + commit)",
                "EndOfRequest per changed request",
                "ratio",
                "client CPU: floor / EndOfRequest",
                "floor: statements / commits",
                "EndOfRequest: statements / commits",
            ],
            rows,
        )
    )
    return result


SECTION = Section("floor", run)
