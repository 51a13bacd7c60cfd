"""Section: what each contender of the throughput runs costs its store, per request, read from the
store servers' own counters before and after each run (bench/throughput.py makes the runs,
bench/storecounters.py reads the counters; how each server's runs are kept apart is said there).
"""

from __future__ import annotations

from . import throughput
from .report import BenchConfig, Section, SectionResult, Table
from .storecounters import StoreLoad, fmt


def _rows(load: StoreLoad) -> list[str]:
    return [
        fmt(load.per_request("rows_ins", "rows_upd", "rows_del")),
        " / ".join(fmt(load.per_request(k)) for k in ("rows_ins", "rows_upd", "rows_del")),
    ]


def _by_command(load: StoreLoad, limit: int = 6) -> str:
    n = max(1, load.requests)
    commands = sorted(load.commands().items(), key=lambda kv: -kv[1])
    shown = [f"{name} {v / n:.2f}" for name, v in commands if v >= 0.005 * n]
    return ", ".join(shown[:limit]) or "-"


def postgres_table(rows: list[tuple[str, StoreLoad]]) -> Table:
    has_statements = any("statements" in load.delta for _, load in rows)
    out = [
        [
            label,
            f"{load.requests:,}",
            fmt(load.per_request("statements")) if has_statements else "-",
            _by_command(load) if has_statements else "-",
            fmt(load.per_request("commits")),
            *_rows(load),
            load.cell("bytes"),
        ]
        for label, load in rows
    ]
    columns = ["PostgreSQL", "requests", "statements/req", "per request, by statement"]
    columns += ["commits/req", "rows written/req", "ins / upd / del"]
    return Table([*columns, "WAL bytes/req"], out)


def mysql_table(rows: list[tuple[str, StoreLoad]]) -> Table:
    out = [
        [
            label,
            f"{load.requests:,}",
            load.cell("statements"),
            load.cell("writes"),
            load.cell("selects"),
            load.cell("commits"),
            *_rows(load),
            load.cell("bytes"),
        ]
        for label, load in rows
    ]
    columns = ["MySQL (MariaDB)", "requests", "statements/req", "write statements/req"]
    columns += ["selects/req", "commits/req", "rows written/req", "ins / upd / del"]
    return Table([*columns, "bytes received/req"], out)


def redis_table(rows: list[tuple[str, StoreLoad]]) -> Table:
    out = []
    for label, load in rows:
        out.append(
            [
                label,
                f"{load.requests:,}",
                fmt(sum(load.commands().values()) / max(1, load.requests)),
                _by_command(load),
                fmt(load.per_request("bytes")),
            ]
        )
    columns = ["Redis", "requests", "commands/req", "per request, by command"]
    return Table([*columns, "bytes received/req"], out)


TABLES = {"postgres": postgres_table, "mysql": mysql_table, "redis": redis_table}


def background_note(loads: list[StoreLoad]) -> str | None:
    """How much other clients' traffic was subtracted from server-wide counters."""
    parts = []
    for kind, key, word in (
        ("postgres", "bytes", "WAL bytes"),
        ("mysql", "statements", "statements"),
        ("redis", "bytes", "bytes received"),
    ):
        same = [x for x in loads if x.kind == kind and x.background]
        if same:
            bg = sum(x.background.get(key, 0.0) for x in same)
            counted = sum(x.delta.get(key, 0.0) for x in same)
            parts.append(
                f"{kind} {bg / max(1, sum(x.requests for x in same)):,.1f} {word}/req "
                f"({bg / max(1.0, bg + counted):.0%} of the raw count)"
            )
    if not parts:
        return None
    return (
        "Subtracted from server-wide counters as other clients' traffic (their idle rate before "
        "each run times the run's length): " + "; ".join(parts) + ". A value marked * had more "
        "than a quarter of its raw count subtracted: read it as an estimate."
    )


def run(config: BenchConfig) -> SectionResult:
    runs = throughput.runs(config)
    result = SectionResult(
        "Store load per request, from the store servers' counters",
        "The throughput runs above, measured at the store: the server's own counters are read "
        "before the benchmark server starts and after it has stopped (so the warm-up, the "
        "measured run and the shutdown flush are all counted), and divided by every request "
        "the load generator sent. Each run has a place of its own, removed afterwards: "
        "PostgreSQL a database on a private server (`pg_stat_statements`, `pg_stat_database`, "
        "`pg_stat_user_tables`, `pg_stat_wal`), MariaDB a user on the shared server "
        "(`information_schema.USER_STATISTICS`), Redis a key prefix on a private `redis-server` "
        "(`INFO commandstats`, `INFO stats`). SQLite has no server counters and is not shown.",
    )
    by_kind: dict[str, list[tuple[str, StoreLoad]]] = {}
    for r in runs:
        if r.store_load is None:
            continue
        if r.store_load.problem:
            result.notes.append(f"not shown: {r.label}: {r.store_load.problem}")
            continue
        by_kind.setdefault(r.store_load.kind, []).append((r.label, r.store_load))
    for kind in ("postgres", "mysql", "redis"):
        if by_kind.get(kind):
            result.tables.append(TABLES[kind](by_kind[kind]))
            isolations = sorted({load.isolation for _, load in by_kind[kind]})
            result.notes.append(f"{kind}: counted with {', '.join(isolations)}")
    postgres = by_kind.get("postgres", [])
    if postgres and not any("statements" in load.delta for _, load in postgres):
        result.notes.append(
            "PostgreSQL statements/req: `pg_stat_statements` is not loaded on this server; "
            "*commits/req* counts transactions instead."
        )
    if postgres:
        result.notes.append(
            "PostgreSQL: *statements* are every statement the run's database executed, BEGIN "
            "and COMMIT included; *WAL bytes* include autovacuum and checkpoints the run caused."
        )
    if by_kind.get("mysql"):
        result.notes.append(
            "MariaDB: *write statements* are INSERT, UPDATE, DELETE and REPLACE together "
            "(USER_STATISTICS does not split them); *rows written* are rows inserted, updated "
            "and deleted."
        )
    if by_kind.get("redis"):
        result.notes.append(
            "Redis: commands that Lua scripts run are counted besides the EVALSHA that ran them."
        )
    note = background_note([load for rows in by_kind.values() for _, load in rows])
    if note:
        result.notes.append(note)
    if not by_kind:
        result.notes.append("no run used a store server (see the throughput section's notes)")
    return result


SECTION = Section("storeload", run)
