"""Section: what each contender of the throughput runs costs its store, per request, read from the
store servers' own counters before and after each run (bench/throughput.py makes the runs).

Counters, read by a separate connection:

- PostgreSQL: ``pg_stat_user_tables`` (``n_tup_ins/upd/del`` of this run's tables only: exact),
  ``pg_stat_database`` (``xact_commit``, ``tup_*`` of the database), ``pg_stat_wal``
  (``wal_bytes``: the bytes the writes cost) and, when the extension is installed,
  ``pg_stat_statements`` (calls of statements naming this run's tables).
- MySQL/MariaDB: ``SHOW GLOBAL STATUS`` (``Com_insert/update/delete/replace``, ``Questions``,
  ``Innodb_rows_*``, ``Bytes_received``).
- Redis: ``INFO commandstats`` (calls per command) and ``INFO stats``
  (``total_net_input_bytes``).

Only the PostgreSQL table counters belong to one run; the others are server-wide. Other clients
of the same server (other benchmarks, test suites) add to them, so each global counter is
corrected by its idle rate, sampled for a moment just before the run with no benchmark server up.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .report import BenchConfig, Section, SectionResult, Table

#: The local servers of tests/services.py (same environment overrides).
DEFAULT_URLS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
    "mysql": "mysql://root@127.0.0.1:3306/test",
    "redis": "redis://127.0.0.1:6379/0",
}
TIMEOUT_S = 3
IDLE_SAMPLE_S = 0.5
#: Counters that only this run touches: never corrected for background.
EXACT = frozenset({"tab_ins", "tab_upd", "tab_del", "statements"})
#: Commands the measuring connection itself sends to Redis.
OWN_REDIS_COMMANDS = frozenset({"info", "ping", "client|setinfo", "client|setname", "hello"})


def store_url(kind: str) -> str:
    return os.environ.get(f"SESSIONKEEPER_TEST_{kind.upper()}_URL", DEFAULT_URLS[kind])


def unique_prefix(kind: str) -> str:
    """A per-run prefix: ``skb_3f9a1c2b7d_`` for tables, ``skb_3f9a1c2b7d:`` for Redis keys."""
    token = f"skb_{uuid.uuid4().hex[:10]}"
    return f"{token}:" if kind == "redis" else f"{token}_"


class Counters:
    """Reads one store server's counters; ``cleanup`` removes what a run left under its prefix."""

    kind = ""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix

    def read(self) -> dict[str, float]:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def settle(self) -> None:
        """Wait until counters of the run's last requests are visible (after the server quit)."""


class PostgresCounters(Counters):
    kind = "postgres"

    def _connect(self):  # type: ignore[no-untyped-def]
        import psycopg

        conninfo = self.url.replace("postgresql+psycopg://", "postgresql://", 1)
        return psycopg.connect(conninfo, connect_timeout=TIMEOUT_S, autocommit=True)

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        with self._connect() as conn:
            ins, upd, dele = conn.execute(
                "SELECT coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0), "
                "coalesce(sum(n_tup_del), 0) FROM pg_stat_user_tables "
                "WHERE starts_with(relname, %s)",
                (self.prefix,),
            ).fetchone()
            out.update(tab_ins=ins, tab_upd=upd, tab_del=dele)
            row = conn.execute(
                "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted "
                "FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
            for name, value in zip(
                ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted"),
                row,
                strict=True,
            ):
                out[name] = value
            with contextlib.suppress(Exception):  # PostgreSQL < 14 has no pg_stat_wal
                out["wal_bytes"] = conn.execute("SELECT wal_bytes FROM pg_stat_wal").fetchone()[0]
            has_pgss = conn.execute(
                "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
            ).fetchone()
            if has_pgss:
                with contextlib.suppress(Exception):  # installed but not preloaded
                    out["statements"] = conn.execute(
                        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                        "WHERE strpos(query, %s) > 0",
                        (self.prefix,),
                    ).fetchone()[0]
        return {k: float(v) for k, v in out.items()}

    def settle(self) -> None:
        # A backend publishes its counters when it exits; the workers' connections have just
        # closed. Wait (bounded) until this run's table counters stop moving.
        last = self.read()
        for _ in range(10):
            time.sleep(0.3)
            now = self.read()
            if all(now.get(k) == last.get(k) for k in ("tab_ins", "tab_upd", "tab_del")):
                return
            last = now

    def cleanup(self) -> None:
        with self._connect() as conn:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT tablename FROM pg_tables "
                    "WHERE schemaname = current_schema() AND starts_with(tablename, %s)",
                    (self.prefix,),
                ).fetchall()
            ]
            if names:
                conn.execute(
                    "DROP TABLE IF EXISTS " + ", ".join(f'"{n}"' for n in names) + " CASCADE"
                )


MYSQL_STATUS = (
    "Com_insert",
    "Com_update",
    "Com_delete",
    "Com_replace",
    "Com_select",
    "Questions",
    "Innodb_rows_inserted",
    "Innodb_rows_updated",
    "Innodb_rows_deleted",
    "Bytes_received",
)


class MysqlCounters(Counters):
    kind = "mysql"

    def _connect(self):  # type: ignore[no-untyped-def]
        import pymysql

        parts = urlsplit(self.url)
        return pymysql.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
            database=parts.path.lstrip("/") or None,
            connect_timeout=TIMEOUT_S,
            autocommit=True,
        )

    def read(self) -> dict[str, float]:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                names = ", ".join(f"'{n}'" for n in MYSQL_STATUS)
                cur.execute(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})")
                return {name: float(value) for name, value in cur.fetchall()}
        finally:
            conn.close()

    def cleanup(self) -> None:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                pattern = self.prefix.replace("_", "\\_") + "%"
                cur.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = DATABASE() AND table_name LIKE %s",
                    (pattern,),
                )
                names = [r[0] for r in cur.fetchall()]
                if names:
                    cur.execute("SET FOREIGN_KEY_CHECKS = 0")
                    cur.execute("DROP TABLE IF EXISTS " + ", ".join(f"`{n}`" for n in names))
                    cur.execute("SET FOREIGN_KEY_CHECKS = 1")
        finally:
            conn.close()


class RedisCounters(Counters):
    kind = "redis"

    def _connect(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(
            self.url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S
        )

    def read(self) -> dict[str, float]:
        client = self._connect()
        try:
            out: dict[str, float] = {}
            for name, stats in client.info("commandstats").items():
                command = name.removeprefix("cmdstat_")
                if command not in OWN_REDIS_COMMANDS:
                    out[f"cmd:{command}"] = float(stats["calls"])
            out["net_input_bytes"] = float(client.info("stats")["total_net_input_bytes"])
            return out
        finally:
            client.close()

    def cleanup(self) -> None:
        client = self._connect()
        try:
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{self.prefix}*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    client.delete(*batch)
                    batch.clear()
            if batch:
                client.delete(*batch)
        finally:
            client.close()


COUNTERS: dict[str, type[Counters]] = {
    "postgres": PostgresCounters,
    "mysql": MysqlCounters,
    "redis": RedisCounters,
}


def unavailable_reason(kind: str) -> str | None:
    """Why the ``kind`` server cannot be used, or ``None`` when its counters can be read."""
    try:
        COUNTERS[kind](store_url(kind), "skb_probe_").read()
    except ImportError as exc:
        return f"{kind}: driver not installed ({exc})"
    except Exception as exc:
        return f"{kind} not reachable at {store_url(kind)} ({type(exc).__name__}: {exc})"
    return None


# -- one run's load ---------------------------------------------------------------------------------


@dataclass
class StoreLoad:
    """Counter deltas over one run: from before its server started until after it stopped."""

    kind: str
    requests: int  # every request the load generator sent (warm-up included)
    delta: dict[str, float]
    background: dict[str, float] = field(default_factory=dict)  # subtracted, per counter

    def per_request(self, name: str) -> float:
        return self.delta.get(name, 0.0) / max(1, self.requests)

    def commands(self) -> dict[str, float]:
        return {k[4:]: v for k, v in self.delta.items() if k.startswith("cmd:") and v > 0}


class Meter:
    """Measures one run: ``start()`` before the server starts, ``stop()`` after it quit."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.rates: dict[str, float] = {}
        self.before: dict[str, float] = {}
        self.t0 = 0.0

    def start(self) -> None:
        first, t_first = self.counters.read(), time.monotonic()
        time.sleep(IDLE_SAMPLE_S)
        self.before, self.t0 = self.counters.read(), time.monotonic()
        idle_s = self.t0 - t_first
        self.rates = {
            k: max(0.0, (v - first.get(k, 0.0)) / idle_s)
            for k, v in self.before.items()
            if k not in EXACT
        }

    def stop(self, requests: int) -> StoreLoad:
        self.counters.settle()
        after = self.counters.read()
        window_s = time.monotonic() - self.t0
        delta: dict[str, float] = {}
        background: dict[str, float] = {}
        for k, v in after.items():
            raw = v - self.before.get(k, 0.0)
            bg = self.rates.get(k, 0.0) * window_s
            delta[k] = max(0.0, raw - bg)
            if bg:
                background[k] = bg
        return StoreLoad(self.counters.kind, requests, delta, background)


# -- the section ------------------------------------------------------------------------------------


def _f(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:.3f}" if value < 10 else f"{value:,.0f}"


def _sum(load: StoreLoad, *names: str) -> float:
    return sum(load.per_request(n) for n in names)


def postgres_table(rows: list[tuple[str, StoreLoad]]) -> Table:
    has_statements = any("statements" in load.delta for _, load in rows)
    out = []
    for label, load in rows:
        out.append(
            [
                label,
                f"{load.requests:,}",
                _f(load.per_request("statements")) if has_statements else "-",
                _f(load.per_request("xact_commit")),
                _f(_sum(load, "tab_ins", "tab_upd", "tab_del")),
                " / ".join(_f(load.per_request(k)) for k in ("tab_ins", "tab_upd", "tab_del")),
                _f(_sum(load, "tup_inserted", "tup_updated", "tup_deleted")),
                _f(load.per_request("wal_bytes")),
            ]
        )
    return Table(
        [
            "PostgreSQL",
            "requests",
            "statements/req",
            "commits/req",
            "rows written/req",
            "ins / upd / del",
            "db tup written/req",
            "WAL bytes/req",
        ],
        out,
    )


def mysql_table(rows: list[tuple[str, StoreLoad]]) -> Table:
    out = []
    for label, load in rows:
        out.append(
            [
                label,
                f"{load.requests:,}",
                _f(load.per_request("Questions")),
                _f(_sum(load, "Com_insert", "Com_update", "Com_delete", "Com_replace")),
                " / ".join(
                    _f(load.per_request(k))
                    for k in ("Com_insert", "Com_update", "Com_delete", "Com_select")
                ),
                _f(
                    _sum(load, "Innodb_rows_inserted", "Innodb_rows_updated", "Innodb_rows_deleted")
                ),
                _f(load.per_request("Bytes_received")),
            ]
        )
    return Table(
        [
            "MySQL (MariaDB)",
            "requests",
            "statements/req",
            "write statements/req",
            "insert / update / delete / select",
            "rows written/req",
            "bytes received/req",
        ],
        out,
    )


def redis_table(rows: list[tuple[str, StoreLoad]]) -> Table:
    out = []
    for label, load in rows:
        commands = load.commands()
        total = sum(commands.values()) / max(1, load.requests)
        top = sorted(commands.items(), key=lambda kv: -kv[1])
        shown = [
            f"{name} {v / max(1, load.requests):.2f}"
            for name, v in top
            if v >= 0.005 * load.requests
        ]
        out.append(
            [
                label,
                f"{load.requests:,}",
                _f(total),
                ", ".join(shown[:4]) or "-",
                _f(load.per_request("net_input_bytes")),
            ]
        )
    return Table(
        ["Redis", "requests", "commands/req", "per request, by command", "bytes received/req"],
        out,
    )


TABLES = {"postgres": postgres_table, "mysql": mysql_table, "redis": redis_table}


def background_note(loads: list[StoreLoad]) -> str | None:
    """How much of the global counters was other clients' traffic (subtracted)."""
    parts = []
    for kind, key, word in (
        ("postgres", "xact_commit", "commits"),
        ("mysql", "Questions", "statements"),
        ("redis", None, "commands"),
    ):
        same = [x for x in loads if x.kind == kind]
        if not same:
            continue
        if key is None:
            bg = sum(sum(v for k, v in x.background.items() if k.startswith("cmd:")) for x in same)
        else:
            bg = sum(x.background.get(key, 0.0) for x in same)
        parts.append(f"{kind} {bg / max(1, sum(x.requests for x in same)):.3f} {word}/req")
    if not parts:
        return None
    return (
        "Background subtracted from the server-wide counters (other clients' traffic, from the "
        "idle rate sampled before each run), per request of this section: " + "; ".join(parts) + "."
    )


def run(config: BenchConfig) -> SectionResult:
    from . import throughput

    runs = throughput.runs(config)
    result = SectionResult(
        "Store load per request, from the store servers' counters",
        "The throughput runs above, measured at the store: each server's own counters are read "
        "before the benchmark server starts and after it has stopped (so the warm-up, the "
        "measured run and the shutdown flush are all counted), and divided by every request "
        "the load generator sent. Each run has its own table prefix or key prefix, removed "
        "afterwards. *rows written* counts only the run's own tables (PostgreSQL "
        "`pg_stat_user_tables`); the other columns are server-wide counters, corrected for "
        "other clients' traffic by their idle rate. SQLite has no server counters and is not "
        "shown.",
    )
    by_kind: dict[str, list[tuple[str, StoreLoad]]] = {}
    for r in runs:
        if r.store_load is not None:
            by_kind.setdefault(r.store_load.kind, []).append((r.label, r.store_load))
    for kind in ("postgres", "mysql", "redis"):
        if by_kind.get(kind):
            result.tables.append(TABLES[kind](by_kind[kind]))
    has_pgss = any("statements" in load.delta for _, load in by_kind.get("postgres", []))
    if by_kind.get("postgres") and not has_pgss:
        result.notes.append(
            "PostgreSQL statements/req: `pg_stat_statements` is not installed on this server "
            "(*commits/req* counts transactions instead)."
        )
    note = background_note([load for rows in by_kind.values() for _, load in rows])
    if note:
        result.notes.append(note)
    if not by_kind:
        result.notes.append("no run used a store server (see the throughput section's notes)")
    return result


SECTION = Section("storeload", run)
