"""Bad data in a real store, end to end: a request presenting a session whose stored form cannot be
read is served a new session (counted in ``stats()["corrupt_sessions"]`` and logged), never a 500.

tests/stores checks that each store reports such data as ``CorruptSessionData``; here the damage
goes through the WSGI middleware and the manager on PostgreSQL, MariaDB and Redis.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pytest
import sqlalchemy as sa

import sessionkeeper as sk
from sessionkeeper.stores import SaveStatus
from sessionkeeper.stores.sql import SCHEMA_VERSION
from sessionkeeper.wsgi import SessionMiddleware
from tests.core.wsgi_util import call, environ
from tests.services import unique_name
from tests.stores.contract import req, tok
from tests.stores.damage import REDIS_DAMAGE, damage_redis_session

from .conftest import FIXTURE_OF, Target

SQL_DAMAGE = [
    # (server, layout, damage)
    *[(k, "single_row", d) for k in ("postgresql", "mysql") for d in ("truncated", "newer_blob")],
    *[(k, "multi_row", d) for k in ("postgresql", "mysql") for d in ("garbage_value",)],
    ("postgresql", "single_row", "nan_time"),
    ("postgresql", "multi_row", "nan_time"),
    ("mysql", "multi_row", "bad_name"),
]


def counter_app(env: dict[str, Any], start_response: Any) -> list[bytes]:
    s = env["sessionkeeper.session"]
    s["n"] = s.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(s["n"]).encode()]


def serve_after_damage(
    target: Target, damage: Any, caplog: pytest.LogCaptureFixture, contents: Any = "updated"
) -> None:
    """Node a stores a session, ``damage(store, token)`` breaks it, node b is asked for it."""
    clock = sk.FakeClock()
    a = sk.SessionManager(target.open(), node="a", clock=clock, housekeeping=False)
    b = sk.SessionManager(
        target.open(), node="b", clock=clock, housekeeping=False, contents=contents
    )
    try:
        first = call(SessionMiddleware(counter_app, a, "shop"), environ())
        assert first.status == 200 and first.session_id
        assert call(SessionMiddleware(counter_app, a, "shop"), environ(
            cookie=f"sessionid={first.session_id}")).body == b"2"  # fmt: skip
        tok = first.session_id.split(".")[0]
        damage(a.store, tok)
        caplog.set_level(logging.ERROR, logger="sessionkeeper")
        wsgi_b = SessionMiddleware(counter_app, b, "shop")
        resp = call(wsgi_b, environ(cookie=f"sessionid={first.session_id}"))
        assert resp.status == 200 and resp.body == b"1"  # a new session
        assert resp.session_id and resp.session_id.split(".")[0] != tok
        assert b.stats()["corrupt_sessions"] == 1
        assert any("unreadable data" in r.getMessage() for r in caplog.records)
        again = call(wsgi_b, environ(cookie=f"sessionid={resp.session_id}"))
        assert again.status == 200 and again.body == b"2"
        stored = b.store.load("shop", resp.session_id.split(".")[0])
        assert stored is not None and json.loads(stored.attributes["n"]) == 2
        assert b.stats()["write_failures"] == 0 and b.stats()["dirty"] == 0
    finally:
        a.close(deadline_s=0)
        b.close(deadline_s=0)


def sql_damage(kind: str, damage: str) -> Any:
    def apply(store: Any, tok: str) -> None:
        s, at = store.tables.sessions, store.tables.attributes
        where = sa.and_(s.c.app == "shop", s.c.token == tok)
        with store.engine.begin() as conn:
            if damage in ("truncated", "newer_blob"):
                blob = conn.execute(sa.select(s.c.data).where(where)).scalar_one()
                bad = blob[:-3] if damage == "truncated" else b"SK\x02" + blob[3:]
                conn.execute(sa.update(s).where(where).values(data=bad))
            elif damage == "garbage_value":
                conn.execute(sa.update(at).where(at.c.token == tok).values(value=b"\xff\x00{"))
            elif damage == "nan_time":
                conn.execute(sa.update(s).where(where).values(last_access_at=math.nan))
            elif damage == "bad_name":  # bytes that are not UTF-8, past the column's type
                conn.exec_driver_sql(
                    f"UPDATE {at.name} SET name = %s WHERE token = %s", (b"\xff\xfe", tok.encode())
                )

    return apply


@pytest.mark.parametrize(
    ("kind", "layout", "damage"), SQL_DAMAGE, ids=["-".join(p) for p in SQL_DAMAGE]
)
def test_sql_bad_data_gives_a_new_session(
    request: pytest.FixtureRequest,
    kind: str,
    layout: str,
    damage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url: str = request.getfixturevalue(FIXTURE_OF[kind])
    target = Target(kind, url, {"table_prefix": unique_name("skbad"), "layout": layout})
    try:
        serve_after_damage(target, sql_damage(kind, damage), caplog)
    finally:
        target.cleanup()


def test_mysql_attribute_name_that_is_not_utf8(
    mysql_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: such a name was served as a key with surrogate escapes, and a session holding
    it could never be written again under contents="all" (encoding the name failed)."""
    target = Target("mysql", mysql_url, {"table_prefix": unique_name("skbad")})
    try:
        serve_after_damage(target, sql_damage("mysql", "bad_name"), caplog, contents="all")
        # A write merging onto such a row skips the unreadable attribute instead of failing.
        store = target.open()
        first = store.save_many([req(tok(1), 0, {"n": b"1", "m": b"2"})])[0]
        assert first.version == 1
        store.save_many([req(tok(1), 1, {"n": b"3"})])
        at = store.tables.attributes  # type: ignore[attr-defined]
        with store.engine.begin() as conn:  # type: ignore[attr-defined]
            conn.exec_driver_sql(f"UPDATE {at.name} SET name = %s WHERE name = 'm'", (b"\xff\xfe",))
        [res] = store.save_many([req(tok(1), 1, {"x": b"4"})])  # version 1: a conflict
        assert res.status is SaveStatus.SAVED and res.merged_from is not None
        assert dict(res.merged_from.attributes) == {"n": b"3"}
    finally:
        target.cleanup()


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_tables_of_a_newer_schema_are_refused_not_overwritten(
    request: pytest.FixtureRequest, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A schema row from a newer release is not per-session damage: the store refuses every call
    with a ``StoreError`` naming the cause (not retried, not counted as corrupt), and nothing is
    written over the newer tables. A request whose session must be read gets 503 with
    Retry-After, and the cause is logged."""
    url: str = request.getfixturevalue(FIXTURE_OF[kind])
    target = Target(kind, url, {"table_prefix": unique_name("skbad")})
    try:
        old = target.open()
        old.init_schema()  # type: ignore[attr-defined]
        with old.engine.begin() as conn:  # type: ignore[attr-defined]
            conn.execute(sa.update(old.tables.schema).values(version=SCHEMA_VERSION + 1))  # type: ignore[attr-defined]
        m = sk.SessionManager(
            target.open(), node="b", housekeeping=False, on_write_failure="defer"
        )  # served and kept dirty, as the assertions below expect; "refuse" would answer 503
        try:
            wsgi = SessionMiddleware(counter_app, m, "shop")
            with caplog.at_level("ERROR", logger="sessionkeeper"):
                resp = call(wsgi, environ(cookie=f"sessionid={tok(1)}.a"))
            assert resp.status == 503 and resp.header("Retry-After") == ["5"]
            assert "newer sessionkeeper" in caplog.text
            resp = call(wsgi, environ())  # a new session is served, its write refused
            assert resp.status == 200
            st = m.stats()
            assert st["corrupt_sessions"] == 0 and st["store_retries"] == 0
            assert st["write_failures"] == 1 and st["dirty"] == 1
        finally:
            m.close(deadline_s=0)
        with old.engine.connect() as conn:  # type: ignore[attr-defined]
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(old.tables.sessions)).scalar()
                == 0
            )  # type: ignore[attr-defined]
    finally:
        target.cleanup()


def redis_damage(damage: str) -> Any:
    def apply(store: Any, tok: str) -> None:
        damage_redis_session(store, "shop", tok, damage)

    return apply


@pytest.mark.parametrize("damage", REDIS_DAMAGE)
def test_redis_bad_data_gives_a_new_session(
    redis_url: str, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = Target("redis", redis_url, {"key_prefix": unique_name("skbad") + ":"})
    try:
        serve_after_damage(target, redis_damage(damage), caplog)
    finally:
        target.cleanup()
