"""Section: the stores themselves, on the local servers.

* **Flush throughput**: 10,000 dirty sessions of about 1 KB each written by one ``store.save_many``
  call, in the shape the manager's flush gives it (first a batch of new sessions, full attribute
  sets at version 0; then a batch where each session changed one ~1 KB attribute at version 1),
  beside a naive loop of one statement or command per session: a plain SQLAlchemy upsert of the
  session's blob in its own transaction, or one ``HSET`` per session without a pipeline.
* **Failover load latency**: ``store.load`` of one ~1 KB session, as a node does on a cache miss.
* **Sweep on PostgreSQL**: 1,000,000 expired sessions (one attribute each, inserted with
  ``generate_series``) deleted by ``store.delete_expired(before, limit=1000)`` batches while another
  process keeps writing a live session; the longest single write against a batch's duration.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sessionkeeper.stores import RetryPolicy, SaveRequest, SaveStatus, Store

from .report import BenchConfig, Section, SectionResult, Table, Verdict, ratio
from .storecounters import store_url, unique_prefix

TARGET_FLUSH_S = 1.0
SWEEP_LIMIT = 1000


@dataclass(frozen=True)
class Sizes:
    sessions: int  # per flush batch
    naive: int  # sessions in the naive loop (its rate is per session; fewer keeps it short)
    loads: int
    sweep_rows: int


FULL = Sizes(sessions=10_000, naive=1_000, loads=1_000, sweep_rows=1_000_000)
QUICK = Sizes(sessions=2_000, naive=300, loads=300, sweep_rows=100_000)
#: Update flushes per store; the quickest is reported (the machine is shared).
ROUNDS = 3


@dataclass(frozen=True)
class Backend:
    label: str
    kind: str  # sqlite, postgres, mysql, redis
    layout: str | None = None


BACKENDS = [
    Backend("SQLite multi_row", "sqlite", "multi_row"),
    Backend("SQLite single_row", "sqlite", "single_row"),
    Backend("PostgreSQL multi_row", "postgres", "multi_row"),
    Backend("PostgreSQL single_row", "postgres", "single_row"),
    Backend("MariaDB multi_row", "mysql", "multi_row"),
    Backend("MariaDB single_row", "mysql", "single_row"),
    Backend("Redis", "redis"),
]


# -- payloads ---------------------------------------------------------------------------------------


def attributes(i: int) -> dict[str, bytes]:
    """About 1 KB of JSON in two attributes, as the JSON serializer writes them."""
    cart = [{"sku": f"SKU-{i:06d}-{k}", "qty": k + 1, "price": 9.99 + k} for k in range(3)]
    profile = {"user": f"user{i}", "prefs": {"theme": "dark", "lang": "en"}, "seen": "x" * 680}
    return {
        "cart": json.dumps(cart).encode(),
        "profile": json.dumps(profile).encode(),
    }


def token(i: int) -> str:
    return f"bench{i:027d}"


def creates(n: int, now: float) -> list[SaveRequest]:
    return [
        SaveRequest("bench", token(i), 0, now, now, 1800.0, attributes(i), full=True, node="b")
        for i in range(n)
    ]


def updates(n: int, now: float, version: int = 1) -> list[SaveRequest]:
    return [
        SaveRequest(
            "bench",
            token(i),
            version,
            now,
            now + version,
            1800.0,
            {"profile": attributes(i + version)["profile"]},
            node="b",
        )
        for i in range(n)
    ]


# -- opening and cleaning up -------------------------------------------------------------------------


@contextmanager
def opened(backend: Backend, tmp: Path) -> Iterator[Store]:
    from sessionkeeper.stores import open_store

    prefix = unique_prefix("redis" if backend.kind == "redis" else "sql")
    retry = RetryPolicy(attempts=2, backoff_s=0.05)
    if backend.kind == "redis":
        store = open_store(store_url("redis"), key_prefix=prefix, timeout_s=3, retry=retry)
    else:
        url = (
            f"sqlite:///{tmp / (prefix + backend.layout + '.db')}"
            if backend.kind == "sqlite"
            else store_url(backend.kind)
        )
        store = open_store(url, layout=backend.layout, table_prefix=prefix, retry=retry)
    try:
        yield store
    finally:
        cleanup(store)


def cleanup(store: Store) -> None:
    try:
        if hasattr(store, "tables"):
            store.tables.metadata.drop_all(store.engine)  # type: ignore[attr-defined]
        else:
            client: Any = store.client  # type: ignore[attr-defined]
            prefix = store.key_prefix  # type: ignore[attr-defined]
            keys = list(client.scan_iter(match=f"{prefix}*", count=5000))
            for i in range(0, len(keys), 5000):
                client.delete(*keys[i : i + 5000])
    finally:
        store.close()


# -- flush throughput -----------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def flush(store: Store, requests: list[SaveRequest]) -> float:
    results: list[Any] = []
    elapsed = timed(lambda: results.extend(store.save_many(requests)))
    bad = [r for r in results if r.status is not SaveStatus.SAVED]
    if bad or len(results) != len(requests):
        raise AssertionError(f"{len(bad)} of {len(requests)} sessions not saved: {bad[:1]}")
    return elapsed


def naive_sql(store: Any, n: int, now: float) -> float:
    """One upsert of the session's whole blob per session, each in its own transaction."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    md = sa.MetaData()
    table = sa.Table(
        store.tables.sessions.name.replace("sessions", "naive"),
        md,
        sa.Column("app", sa.String(64), primary_key=True),
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("last_access_at", sa.Double, nullable=False),
        sa.Column("data", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")),
    )
    engine: sa.Engine = store.engine
    md.create_all(engine)
    name = engine.dialect.name
    try:
        rows = [
            {
                "app": "bench",
                "token": token(i),
                "last_access_at": now,
                "data": b"".join(attributes(i).values()),
            }
            for i in range(n)
        ]

        def upsert(row: dict[str, Any]) -> Any:
            if name == "mysql":
                stmt: Any = mysql.insert(table).values(**row)
                return stmt.on_duplicate_key_update(
                    data=stmt.inserted.data, last_access_at=stmt.inserted.last_access_at
                )
            stmt = (postgresql if name == "postgresql" else sqlite).insert(table).values(**row)
            return stmt.on_conflict_do_update(
                index_elements=["app", "token"],
                set_={"data": stmt.excluded.data, "last_access_at": stmt.excluded.last_access_at},
            )

        def loop() -> None:
            for row in rows:
                with engine.begin() as conn:
                    conn.execute(upsert(row))

        return timed(loop)
    finally:
        md.drop_all(engine)


def naive_redis(store: Any, n: int) -> float:
    client = store.client
    prefix = store.key_prefix
    maps = [(f"{prefix}naive:{token(i)}", attributes(i)) for i in range(n)]

    def loop() -> None:
        for key, mapping in maps:
            client.hset(key, mapping=mapping)

    return timed(loop)


def analyze(store: Store) -> None:
    """Table statistics, as a table in use has them (autovacuum, or InnoDB's own sampling)."""
    tables = getattr(store, "tables", None)
    if tables is None:
        return
    names = [tables.sessions.name, tables.attributes.name]
    engine: Any = store.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        if engine.dialect.name == "mysql":
            conn.exec_driver_sql(f"ANALYZE TABLE {', '.join(names)}").all()
        else:
            for name in names:
                conn.exec_driver_sql(f"ANALYZE {name}")


def load_latencies(store: Store, n: int, population: int) -> list[float]:
    step = max(1, population // n)
    out = []
    for k in range(n):
        tok = token((k * step) % population)
        started = time.perf_counter()
        s = store.load("bench", tok)
        out.append(time.perf_counter() - started)
        if s is None:
            raise AssertionError(f"session {tok} not found")
    return out


@dataclass
class FlushRow:
    label: str
    create_s: float
    update_s: float
    naive_rate: float
    load_median_s: float
    load_p99_s: float


def measure(backend: Backend, sizes: Sizes, tmp: Path) -> FlushRow:
    now = time.time()
    with opened(backend, tmp) as store:
        store.load("bench", token(0))  # connect, create the tables, load the scripts
        create_s = flush(store, creates(sizes.sessions, now))
        analyze(store)
        update_s = min(flush(store, updates(sizes.sessions, now, v)) for v in range(1, ROUNDS + 1))
        naive_s = (
            naive_redis(store, sizes.naive)
            if backend.kind == "redis"
            else naive_sql(store, sizes.naive, now)
        )
        loads = sorted(load_latencies(store, sizes.loads, sizes.sessions))
    return FlushRow(
        backend.label,
        create_s,
        update_s,
        sizes.naive / naive_s,
        statistics.median(loads),
        loads[min(len(loads) - 1, int(len(loads) * 0.99))],
    )


# -- the sweep --------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    rows: int
    insert_s: float
    batches: list[float]
    writes: list[float]


def fill_expired(store: Any, rows: int, now: float) -> float:
    """``rows`` expired sessions of one attribute each, straight into the store's tables, on a
    connection of its own without a ``statement_timeout``: the store's own connections stop a
    statement after 80% of its ``timeout_s`` (3 s), which a 1,000,000-row ``INSERT`` outlasts."""
    import psycopg

    s, a = store.tables.sessions.name, store.tables.attributes.name
    old = now - 100_000.0
    url = store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as conn:
        conn.execute("SET statement_timeout = 0")
        started = time.perf_counter()
        conn.execute(
            f"INSERT INTO {s} (app, token, version, created_at, last_access_at, timeout_s, "
            "expires_at, owner, node, tombstone_until, data) "
            f"SELECT 'bench', lpad(g::text, 32, '0'), 1, {old}, {old} + g * 0.001, 1800, "
            f"{old} + 1800 + g * 0.001, NULL, 'gen', NULL, NULL "
            f"FROM generate_series(1, {rows}) AS g"
        )
        conn.execute(
            f"INSERT INTO {a} (app, token, name, value) "
            "SELECT 'bench', lpad(g::text, 32, '0'), 'cart', convert_to(repeat('x', 200), 'UTF8') "
            f"FROM generate_series(1, {rows}) AS g"
        )
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute(f"ANALYZE {s}, {a}")
        conn.commit()
    return elapsed


def live_writer(url: str, prefix: str, now: float, stop: Any, out: Any) -> None:
    """In a process of its own (no GIL shared with the sweeper): write one live session until
    ``stop`` is set, then send the duration of every write."""
    from sessionkeeper.stores.sql import SqlStore

    store = SqlStore(url, table_prefix=prefix)
    writes: list[float] = []
    try:
        [res] = store.save_many(creates(1, now))
        version, i = res.version, 0
        out.put("ready")
        while not stop.is_set():
            i += 1
            req = SaveRequest(
                "bench", token(0), version, now, now + i * 1e-3, 1800.0,
                {"n": str(i).encode()}, node="w",
            )  # fmt: skip
            started = time.perf_counter()
            [res] = store.save_many([req])
            writes.append(time.perf_counter() - started)
            version = res.version
        out.put(writes)
    except BaseException as exc:
        out.put(f"{type(exc).__name__}: {exc}")
    finally:
        store.close()


def sweep_under_writes(rows: int, tmp: Path) -> SweepResult:
    import multiprocessing

    with opened(Backend("PostgreSQL", "postgres", "multi_row"), tmp) as store:
        now = time.time()
        store.load("bench", token(0))
        insert_s = fill_expired(store, rows, now)
        ctx = multiprocessing.get_context("spawn")
        stop, out = ctx.Event(), ctx.Queue()
        prefix = store.tables.sessions.name.removesuffix("sessions")  # type: ignore[attr-defined]
        proc = ctx.Process(target=live_writer, args=(store_url("postgres"), prefix, now, stop, out))
        proc.start()
        batches: list[float] = []
        deleted = 0
        try:
            ready = out.get(timeout=60)
            if ready != "ready":
                raise RuntimeError(f"writer process: {ready}")
            time.sleep(0.2)  # a few writes before the sweep starts
            while True:
                started = time.perf_counter()
                got = store.delete_expired(now, limit=SWEEP_LIMIT)
                batches.append(time.perf_counter() - started)
                deleted += len(got)
                if len(got) < SWEEP_LIMIT:
                    break
        finally:
            stop.set()
            writes = out.get(timeout=60)
            proc.join(30)
            if proc.is_alive():
                proc.kill()
        if not isinstance(writes, list):
            raise RuntimeError(f"writer process: {writes}")
        if deleted != rows:
            raise AssertionError(f"swept {deleted} of {rows} expired sessions")
        return SweepResult(rows, insert_s, batches, writes)


# -- the section ---------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f}"


def run(config: BenchConfig) -> SectionResult:
    sizes = QUICK if config.quick else FULL
    result = SectionResult(
        "Stores: flush throughput, failover load, sweep",
        f"One `store.save_many` of {sizes.sessions:,} sessions of ~1 KB (two JSON attributes), "
        "in the manager's flush shape: *create* is the first write of each session (full "
        "attribute set, version 0), *update* a flush where each session changed one ~1 KB "
        f"attribute (the quickest of {ROUNDS} such flushes). *naive* is one statement per session in its own transaction (SQL: a "
        "SQLAlchemy upsert of the session's blob; Redis: one `HSET` per session, no pipeline), "
        f"over {sizes.naive:,} sessions. The SQL tables are analyzed after the create batch, as "
        "tables in use are. *load* is `store.load` of one ~1 KB session "
        f"({sizes.loads:,} loads), what a node does on failover. Local servers on this machine, "
        "shared with other work.",
    )
    rows: list[list[str]] = []
    pg_update_s: float | None = None
    with tempfile.TemporaryDirectory(prefix="sk-bench-stores-") as tmp_name:
        tmp = Path(tmp_name)
        for backend in BACKENDS:
            try:
                r = measure(backend, sizes, tmp)
            except Exception as exc:
                result.notes.append(f"skipped {backend.label}: {type(exc).__name__}: {exc}")
                continue
            if backend.label == "PostgreSQL multi_row":
                pg_update_s = r.update_s
            update_rate = sizes.sessions / r.update_s
            rows.append(
                [
                    r.label,
                    rate(sizes.sessions, r.create_s),
                    rate(sizes.sessions, r.update_s),
                    f"{r.naive_rate:,.0f}",
                    ratio(update_rate / r.naive_rate),
                    ms(r.update_s),
                    ms(r.load_median_s),
                    ms(r.load_p99_s),
                ]
            )
        result.tables.append(
            Table(
                [
                    "store",
                    "create sessions/s",
                    "update sessions/s",
                    "naive sessions/s",
                    "update vs naive",
                    "update flush ms",
                    "load median ms",
                    "load p99 ms",
                ],
                rows,
            )
        )
        if pg_update_s is not None:
            scaled = pg_update_s * 10_000 / sizes.sessions
            result.verdicts.append(
                Verdict(
                    f"10,000 dirty sessions flushed to local PostgreSQL in under {TARGET_FLUSH_S:g} s",
                    f"{scaled:.2f} s (multi_row update flush"
                    + ("" if sizes.sessions == 10_000 else f", scaled from {sizes.sessions:,}")
                    + ")",
                    scaled < TARGET_FLUSH_S,
                )
            )
        try:
            sweep = sweep_under_writes(sizes.sweep_rows, tmp)
        except Exception as exc:
            result.notes.append(f"sweep skipped: {type(exc).__name__}: {exc}")
            return result
    b, w = sorted(sweep.batches), sorted(sweep.writes)
    total = sum(sweep.batches)
    result.tables.append(
        Table(
            ["PostgreSQL sweep (multi_row)", "value"],
            [
                ["expired sessions (one attribute each)", f"{sweep.rows:,}"],
                ["inserted with generate_series in", f"{sweep.insert_s:.1f} s"],
                [f"delete_expired batches (limit={SWEEP_LIMIT:,})", f"{len(b):,}"],
                ["swept in", f"{total:.1f} s ({sweep.rows / total:,.0f} sessions/s)"],
                ["batch median / max", f"{ms(statistics.median(b))} / {ms(b[-1])} ms"],
                ["live-session writes meanwhile", f"{len(w):,}"],
                [
                    "write median / p99",
                    f"{ms(statistics.median(w))} / {ms(w[int(len(w) * 0.99)])} ms",
                ],
                ["longest write", f"{ms(w[-1])} ms"],
            ],
        )
    )
    result.verdicts.append(
        Verdict(
            "no write blocked longer than one sweep batch",
            f"longest write {ms(w[-1])} ms vs longest batch {ms(b[-1])} ms "
            f"(median write {ms(statistics.median(w))} ms, median batch "
            f"{ms(statistics.median(b))} ms)",
            w[-1] <= b[-1],
        )
    )
    return result


SECTION = Section("stores", run)
