"""The real servers some tests need: PostgreSQL, MariaDB/MySQL and Redis on this machine.

:func:`require` returns a server's URL when it answers, and otherwise skips the test with the
reason, or fails it when ``SESSIONKEEPER_REQUIRE_SERVICES=1`` (CI, where a missing server is a
broken build, not a reason to test less). ``scripts/ensure-services.sh`` starts them.

Each URL can be overridden with ``SESSIONKEEPER_TEST_POSTGRES_URL``, ``..._MYSQL_URL`` and
``..._REDIS_URL``. Tests must not interfere with each other on a shared server: use
:func:`unique_name` for table prefixes and key prefixes, and drop or delete what you created.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

REQUIRE_ENV = "SESSIONKEEPER_REQUIRE_SERVICES"
PROBE_TIMEOUT_S = 3


@dataclass(frozen=True)
class Service:
    name: str
    default_url: str
    probe: Callable[[str], None]  # raises when the server does not answer

    @property
    def env(self) -> str:
        return f"SESSIONKEEPER_TEST_{self.name.upper()}_URL"

    @property
    def url(self) -> str:
        return os.environ.get(self.env, self.default_url)


def _probe_postgres(url: str) -> None:
    import psycopg

    conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, connect_timeout=PROBE_TIMEOUT_S) as conn:
        conn.execute("SELECT 1")


def _probe_mysql(url: str) -> None:
    import pymysql

    parts = urlsplit(url)
    conn = pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        database=parts.path.lstrip("/") or None,
        connect_timeout=PROBE_TIMEOUT_S,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        conn.close()


def _probe_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S
    )
    try:
        client.ping()
    finally:
        client.close()


SERVICES = {
    s.name: s
    for s in (
        Service("postgres", "postgresql://postgres@127.0.0.1:5432/test", _probe_postgres),
        Service("mysql", "mysql://root@127.0.0.1:3306/test", _probe_mysql),
        Service("redis", "redis://127.0.0.1:6379/0", _probe_redis),
    )
}


def services_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def unavailable_reason(name: str) -> str | None:
    """Why service ``name`` cannot be used, or ``None`` when it answers."""
    service = SERVICES[name]
    try:
        service.probe(service.url)
    except ImportError as exc:
        return f"{name}: driver not installed ({exc})"
    except Exception as exc:
        return f"{name} not reachable at {service.url} ({type(exc).__name__}: {exc})"
    return None


def require(name: str) -> str:
    """The URL of service ``name`` (postgres, mysql, redis); skips the calling test when the
    server is down, or fails it when ``SESSIONKEEPER_REQUIRE_SERVICES=1``."""
    reason = unavailable_reason(name)
    if reason is None:
        return SERVICES[name].url
    hint = "run `make services` (scripts/ensure-services.sh)"
    if services_required():
        pytest.fail(f"{reason}; {REQUIRE_ENV}=1 so this is an error: {hint}", pytrace=False)
    pytest.skip(f"{reason}: {hint}")


def unique_name(prefix: str = "skt") -> str:
    """A short name no other test run uses: ``skt_3f9a1c2b7d_``, for table or key prefixes."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}_"
