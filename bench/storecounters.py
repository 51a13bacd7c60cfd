"""The store servers' own counters, read before and after each throughput run (bench/throughput.py
makes the runs with them; bench/storeload.py turns them into its section).

Other clients share the machine's servers (test suites, other benchmarks), so each run is kept
apart, and its counters count that run alone:

- PostgreSQL: a private server for the section (``initdb`` as in the chaos run, default settings,
  fsync on, ``pg_stat_statements`` loaded), and a database of its own per run:
  ``pg_stat_statements`` (calls), ``pg_stat_database`` (``xact_commit``), ``pg_stat_user_tables``
  (``n_tup_ins/upd/del``), ``pg_stat_wal`` (``wal_bytes``). Without the private server: the
  shared one, a database per run, and ``wal_bytes`` server-wide.
- MySQL/MariaDB: the shared server, a user of its own per run, and
  ``information_schema.USER_STATISTICS`` (MariaDB's ``userstat``, switched on for the run and
  restored): bytes received, commands, rows written, commits of that user. Where that is not
  possible, ``SHOW GLOBAL STATUS`` (``Com_*``, ``Handler_*``, ``Bytes_received``), server-wide.
- Redis: a private ``redis-server`` on a free loopback port (no persistence), a key prefix per
  run: ``INFO commandstats`` and ``INFO stats`` (``total_net_input_bytes``). Without the binary,
  the shared server's, server-wide.

Server-wide counters are corrected by their idle rate, sampled for a moment just before each run
with no benchmark server up. ``SESSIONKEEPER_BENCH_PRIVATE_STORES=0`` uses the shared PostgreSQL
and Redis.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sessionkeeper.demo.cluster import free_port

#: The local servers of tests/services.py (same environment overrides).
DEFAULT_URLS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
    "mysql": "mysql://root@127.0.0.1:3306/test",
    "redis": "redis://127.0.0.1:6379/0",
}
TIMEOUT_S = 3
IDLE_SAMPLE_S = 0.5
#: ``0``: measure PostgreSQL and Redis on the shared servers instead of private ones.
PRIVATE_ENV = "SESSIONKEEPER_BENCH_PRIVATE_STORES"
#: Commands the measuring connection itself sends to Redis.
OWN_REDIS_COMMANDS = frozenset(
    {"info", "ping", "client|setinfo", "client|setname", "hello", "scan", "del", "config|get"}
)


def store_url(kind: str) -> str:
    return os.environ.get(f"SESSIONKEEPER_TEST_{kind.upper()}_URL", DEFAULT_URLS[kind])


def unique_prefix(kind: str) -> str:
    """A per-run prefix: ``skb_3f9a1c2b7d_`` for tables, ``skb_3f9a1c2b7d:`` for Redis keys."""
    token = f"skb_{uuid.uuid4().hex[:10]}"
    return f"{token}:" if kind == "redis" else f"{token}_"


def _with_path(url: str, path: str, user: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        host = netloc.rsplit("@", 1)[-1]
        netloc = f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


class Counters:
    """One run's counters at one store server. ``prepare()`` makes the run's private place
    (returns the store URL the app must use), ``read()`` the counters, ``cleanup()`` removes
    everything the run made."""

    kind = ""
    #: Counters that other clients of the server add to (corrected by their idle rate).
    global_keys: frozenset[str] = frozenset()
    isolation = ""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix

    def prepare(self) -> str:
        return self.url

    def read(self) -> dict[str, float]:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def settle(self) -> None:
        """Wait until the counters of the run's last requests are visible (the server quit)."""

    def probe(self) -> None:
        """Raise when the server does not answer."""
        self.read()

    def verify(self) -> str | None:
        """After a run: why its counters cannot be trusted, or ``None``."""
        return None


class PostgresCounters(Counters):
    kind = "postgres"
    global_keys = frozenset({"bytes"})
    isolation = "a database per run"

    def __init__(self, url: str, prefix: str, private: bool = False) -> None:
        super().__init__(url, prefix)
        self.database = prefix.rstrip("_")
        self.run_url = _with_path(url, f"/{self.database}")
        if private:
            self.isolation = "a private PostgreSQL server (pg_stat_statements loaded)"
            self.global_keys = frozenset()

    def _connect(self, url: str):  # type: ignore[no-untyped-def]
        import psycopg

        conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
        return psycopg.connect(conninfo, connect_timeout=TIMEOUT_S, autocommit=True)

    def _admin(self):  # type: ignore[no-untyped-def]
        return self._connect(_with_path(self.url, "/postgres"))

    def probe(self) -> None:
        with self._admin() as conn:
            conn.execute("SELECT 1")

    def prepare(self) -> str:
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')
        return self.run_url

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        # This run's tables first (that connection is itself a transaction in the run's
        # database, counted before the database's own counters are read).
        with self._connect(self.run_url) as conn:
            ins, upd, dele = conn.execute(
                "SELECT coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0), "
                "coalesce(sum(n_tup_del), 0) FROM pg_stat_user_tables"
            ).fetchone()
            out.update(rows_ins=ins, rows_upd=upd, rows_del=dele)
        with self._admin() as conn:
            has_pgss = conn.execute(
                "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
            ).fetchone()
            if has_pgss:
                with contextlib.suppress(Exception):  # installed but not preloaded
                    rows = conn.execute(
                        "SELECT upper(split_part(ltrim(query), ' ', 1)), sum(calls) "
                        "FROM pg_stat_statements "
                        "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s) "
                        "AND strpos(query, 'pg_stat_user_tables') = 0 GROUP BY 1",
                        (self.database,),
                    ).fetchall()
                    out["statements"] = sum(calls for _, calls in rows)
                    out.update((f"cmd:{verb}", calls) for verb, calls in rows)
            row = conn.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (self.database,)
            ).fetchone()
            out["commits"] = row[0] if row else 0
            with contextlib.suppress(Exception):  # PostgreSQL < 14 has no pg_stat_wal
                out["bytes"] = conn.execute("SELECT wal_bytes FROM pg_stat_wal").fetchone()[0]
        return {k: float(v or 0) for k, v in out.items()}

    def settle(self) -> None:
        # A backend publishes its counters when it exits; the workers' connections have just
        # closed. Wait (bounded) until the run's database counters stop moving.
        last = self.read()
        for _ in range(10):
            time.sleep(0.3)
            now = self.read()
            keys = ("rows_ins", "rows_upd", "rows_del", "commits")
            if all(now.get(k) == last.get(k) for k in keys):
                return
            last = now

    def cleanup(self) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


#: information_schema.USER_STATISTICS column -> canonical counter.
USER_STATS = {
    "BYTES_RECEIVED": "bytes",
    "ROWS_INSERTED": "rows_ins",
    "ROWS_UPDATED": "rows_upd",
    "ROWS_DELETED": "rows_del",
    "SELECT_COMMANDS": "selects",
    "UPDATE_COMMANDS": "writes",  # INSERT, UPDATE, DELETE, REPLACE...
    "OTHER_COMMANDS": "others",
    "COMMIT_TRANSACTIONS": "commits",
}
#: SHOW GLOBAL STATUS variable -> canonical counter (MariaDB 10.11 has no Innodb_rows_*).
GLOBAL_STATUS = {
    "Com_insert": "writes",
    "Com_update": "writes",
    "Com_delete": "writes",
    "Com_replace": "writes",
    "Com_select": "selects",
    "Questions": "statements",
    "Com_commit": "commits",
    "Handler_write": "rows_ins",
    "Handler_update": "rows_upd",
    "Handler_delete": "rows_del",
    "Bytes_received": "bytes",
}


class MysqlCounters(Counters):
    kind = "mysql"

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__(url, prefix)
        self.user = prefix.rstrip("_")
        self.per_user = False
        self.isolation = "server-wide counters"
        self.global_keys = frozenset(GLOBAL_STATUS.values())

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

    def _execute(self, *statements: str) -> list[tuple[object, ...]]:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                return list(cur.fetchall())
        finally:
            conn.close()

    def prepare(self) -> str:
        """A user of its own and per-user statistics, when the server allows; else the URL."""
        database = urlsplit(self.url).path.lstrip("/") or "test"
        try:
            (value,) = self._execute("SELECT @@GLOBAL.userstat")[0]
            _USERSTAT_BEFORE.setdefault(self.url, str(value))
            self._execute(
                "SET GLOBAL userstat = 1",
                f"CREATE USER '{self.user}'@'%'",
                f"GRANT ALL PRIVILEGES ON `{database}`.* TO '{self.user}'@'%'",
            )
        except Exception:
            with contextlib.suppress(Exception):
                self._drop_user()
            return self.url
        self.per_user = True
        self.isolation = "a user per run (USER_STATISTICS)"
        self.global_keys = frozenset()
        return _with_path(self.url, urlsplit(self.url).path, user=self.user)

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.per_user:
            rows = self._execute(
                f"SELECT {', '.join(USER_STATS)} FROM information_schema.USER_STATISTICS "
                f"WHERE USER = '{self.user}'"
            )
            values = rows[0] if rows else (0,) * len(USER_STATS)
            for column, value in zip(USER_STATS, values, strict=True):
                out[USER_STATS[column]] = float(str(value or 0))
            out["statements"] = out["selects"] + out["writes"] + out["others"]
            return out
        names = ", ".join(f"'{n}'" for n in GLOBAL_STATUS)
        for name, value in self._execute(f"SHOW GLOBAL STATUS WHERE Variable_name IN ({names})"):
            key = GLOBAL_STATUS[str(name)]
            out[key] = out.get(key, 0.0) + float(str(value))
        return out

    def _drop_user(self) -> None:
        self._execute(f"DROP USER IF EXISTS '{self.user}'@'%'")

    def verify(self) -> str | None:
        if self.per_user and str(self._execute("SELECT @@GLOBAL.userstat")[0][0]) != "1":
            return "userstat was switched off during the run (by another client of the server)"
        return None

    def cleanup(self) -> None:
        pattern = self.prefix.replace("_", "\\_") + "%"
        names = [
            str(r[0])
            for r in self._execute(
                "SELECT table_name FROM information_schema.tables "
                f"WHERE table_schema = DATABASE() AND table_name LIKE '{pattern}'"
            )
        ]
        statements = ["SET FOREIGN_KEY_CHECKS = 0"]
        if names:
            statements.append("DROP TABLE IF EXISTS " + ", ".join(f"`{n}`" for n in names))
        try:
            self._execute(*statements)
        finally:
            if self.per_user:
                with contextlib.suppress(Exception):
                    self._drop_user()


#: MariaDB's ``userstat`` as it was before this process switched it on, per server URL.
_USERSTAT_BEFORE: dict[str, str] = {}


def restore_userstat() -> None:
    """Switch ``userstat`` back off where this process switched it on."""
    for url, value in list(_USERSTAT_BEFORE.items()):
        if value not in ("1", "ON"):
            with contextlib.suppress(Exception):
                MysqlCounters(url, "skb_restore_")._execute("SET GLOBAL userstat = 0")
        del _USERSTAT_BEFORE[url]


class RedisCounters(Counters):
    kind = "redis"

    def __init__(self, url: str, prefix: str, private: bool = False) -> None:
        super().__init__(url, prefix)
        self.private = private
        self.isolation = "a private redis-server" if private else "server-wide counters"
        self.global_keys = frozenset() if private else frozenset({"*"})  # "*": every counter

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
            out["bytes"] = float(client.info("stats")["total_net_input_bytes"])
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


class StoreServers:
    """The store servers of one section run: the shared PostgreSQL and MySQL, and a private
    ``redis-server`` (started on first use, always stopped on exit)."""

    def __init__(self) -> None:
        self.redis: subprocess.Popen[bytes] | None = None
        self.postgres: Any = None  # a PrivatePostgres
        self.urls: dict[str, str] = {}
        self.reasons: dict[str, str | None] = {}
        self.fallbacks: list[str] = []

    def __enter__(self) -> StoreServers:
        return self

    def __exit__(self, *exc: object) -> None:
        restore_userstat()
        if self.postgres is not None:
            self.postgres.close()
            self.postgres = None
        if self.redis is not None:
            self.redis.terminate()
            try:
                self.redis.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.redis.kill()
                self.redis.wait(timeout=5)
            self.redis = None

    def _start_redis(self) -> str | None:
        if os.environ.get(PRIVATE_ENV) == "0":
            return None
        binary = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
        )
        if binary is None:
            return None
        port = free_port()
        workdir = tempfile.gettempdir()
        args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        proc = subprocess.Popen(
            [binary, *args, "--dir", workdir, "--loglevel", "warning"],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                RedisCounters(url, "skb_probe:").read()
            except Exception:
                time.sleep(0.05)
                continue
            self.redis = proc
            return url
        proc.kill()
        proc.wait(timeout=5)
        return None

    def _start_postgres(self) -> str | None:
        """A private PostgreSQL (the chaos run's), with the shared server's defaults (fsync on)
        and ``pg_stat_statements`` loaded."""
        try:
            from tools.chaos.postgres import PrivatePostgres
        except Exception as exc:
            self.fallbacks.append(f"postgres: no private server ({type(exc).__name__}: {exc})")
            return None

        class MeasuredPostgres(PrivatePostgres):  # type: ignore[misc]
            def _options(self) -> str:
                return (
                    f"-p {self.port} -k {self.dir} -h 127.0.0.1 -c max_connections=100 "
                    "-c shared_preload_libraries=pg_stat_statements"
                )

        try:
            server = MeasuredPostgres().__enter__()
        except Exception as exc:
            self.fallbacks.append(f"postgres: no private server ({type(exc).__name__}: {exc})")
            return None
        self.postgres = server
        with contextlib.suppress(Exception):
            import psycopg

            with psycopg.connect(server.url, autocommit=True, connect_timeout=TIMEOUT_S) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return str(server.url).rsplit("/", 1)[0] + "/postgres"

    def url(self, kind: str) -> str:
        if kind not in self.urls:
            private = None
            if kind == "redis":
                private = self._start_redis()
            elif kind == "postgres" and os.environ.get(PRIVATE_ENV) != "0":
                private = self._start_postgres()
            self.urls[kind] = private or store_url(kind)
        return self.urls[kind]

    def counters(self, kind: str, prefix: str) -> Counters:
        url = self.url(kind)
        if kind == "postgres":
            return PostgresCounters(url, prefix, private=self.postgres is not None)
        if kind == "mysql":
            return MysqlCounters(url, prefix)
        return RedisCounters(url, prefix, private=self.redis is not None)

    def unavailable_reason(self, kind: str) -> str | None:
        """Why the ``kind`` server cannot be used, or ``None`` when it answers."""
        if kind not in self.reasons:
            try:
                self.counters(kind, unique_prefix(kind)).probe()
            except ImportError as exc:
                self.reasons[kind] = f"{kind}: driver not installed ({exc})"
            except Exception as exc:
                self.reasons[kind] = (
                    f"{kind} not reachable at {self.url(kind)} ({type(exc).__name__}: {exc})"
                )
            else:
                self.reasons[kind] = None
        return self.reasons[kind]


# -- one run's load ---------------------------------------------------------------------------------


@dataclass
class StoreLoad:
    """Counter deltas over one run: from before its server started until after it stopped."""

    kind: str
    isolation: str
    requests: int  # every request the load generator sent (warm-up included)
    delta: dict[str, float]
    background: dict[str, float] = field(default_factory=dict)  # subtracted, per counter
    problem: str | None = None  # why these counters cannot be trusted

    def per_request(self, *names: str) -> float:
        return sum(self.delta.get(n, 0.0) for n in names) / max(1, self.requests)

    def cell(self, name: str) -> str:
        """``per_request(name)``, marked ``*`` when other clients' traffic was more than a
        quarter of the server-wide count it was subtracted from."""
        bg = self.background.get(name, 0.0)
        noisy = bg > 0.25 * (bg + self.delta.get(name, 0.0))
        return fmt(self.per_request(name)) + ("*" if noisy else "")

    def commands(self) -> dict[str, float]:
        return {k[4:]: v for k, v in self.delta.items() if k.startswith("cmd:") and v > 0}


class Meter:
    """Measures one run: ``start()`` before the server starts, ``stop()`` after it quit."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.rates: dict[str, float] = {}
        self.before: dict[str, float] = {}
        self.t0 = 0.0

    def _global(self, key: str) -> bool:
        return "*" in self.counters.global_keys or key in self.counters.global_keys

    def start(self) -> None:
        if self.counters.global_keys:
            first, t_first = self.counters.read(), time.monotonic()
            time.sleep(IDLE_SAMPLE_S)
        self.before, self.t0 = self.counters.read(), time.monotonic()
        if self.counters.global_keys:
            idle_s = self.t0 - t_first
            self.rates = {
                k: max(0.0, (v - first.get(k, 0.0)) / idle_s)
                for k, v in self.before.items()
                if self._global(k)
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
        return StoreLoad(
            self.counters.kind,
            self.counters.isolation,
            requests,
            delta,
            background,
            self.counters.verify(),
        )


# -- the section ------------------------------------------------------------------------------------


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:.3f}" if value < 10 else f"{value:,.0f}"
