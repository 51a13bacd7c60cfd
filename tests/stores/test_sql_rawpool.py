"""The fast path's driver connections (``stores/sql/rawpool.py``): its own idle ones, aged out as
the engine's ``pool_recycle`` would, and what an error on one means. On SQLite, in process; the
servers' dropped connections are in ``test_sql_one_transaction.py``."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sessionkeeper.stores.sql.dialects import SqliteDialect
from sessionkeeper.stores.sql.rawpool import DriverConnections, RawPool, TransientSqlError


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    e = sa.create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    yield e
    e.dispose()


def _closed(conn: Any) -> bool:
    try:
        conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def test_a_connection_older_than_the_recycle_age_is_replaced(engine: sa.Engine) -> None:
    # As the engine's pool_recycle: an idle connection older than that is closed when taken
    # (before the server's idle timeout can drop it), and a new one made.
    now = [0.0]
    pool = RawPool(engine, recycle_s=3600, monotonic=lambda: now[0])
    try:
        first = pool.get()
        pool.put(first)
        now[0] = 3599.0
        assert pool.get() is first
        pool.put(first)
        now[0] = 3601.0
        second = pool.get()
        assert second is not first and _closed(first)
        pool.put(second)
        now[0] = 7200.0
        assert pool.get() is second  # its own age counts, from when it was made
    finally:
        pool.close()


@pytest.mark.parametrize("pooled", [False, True])
def test_an_error_no_retry_fixes_is_raised_as_it_is(engine: sa.Engine, pooled: bool) -> None:
    # Neither wrapped nor chained to itself; the connection it met is not kept.
    raw = None if pooled else RawPool(engine)
    driver = DriverConnections(engine, SqliteDialect().is_transient, raw)
    used: list[Any] = []
    bad = ValueError("not the driver's")

    def write(conn: Any) -> None:
        used.append(conn)
        raise bad

    with pytest.raises(ValueError) as info:
        driver.run(write)
    assert info.value is bad and info.value.__cause__ is None
    if raw is not None:
        assert _closed(used[0]) and not raw._idle
    driver.close()


@pytest.mark.parametrize("pooled", [False, True])
def test_an_error_a_retry_may_fix_is_transient(engine: sa.Engine, pooled: bool) -> None:
    raw = None if pooled else RawPool(engine)
    driver = DriverConnections(engine, SqliteDialect().is_transient, raw)
    busy = sqlite3.OperationalError("database is locked")
    used: list[Any] = []

    def write(conn: Any) -> None:
        used.append(conn)
        raise busy

    with pytest.raises(TransientSqlError) as info:
        driver.run(write)
    assert info.value.__cause__ is busy
    fresh = driver.run(lambda conn: conn)
    assert fresh is not used[0] and fresh.execute("SELECT 1").fetchone() == (1,)
    if raw is not None:
        assert _closed(used[0])
    driver.close()


def test_a_write_interrupted_closes_its_connection(engine: sa.Engine) -> None:
    # Not only Exception: KeyboardInterrupt, SystemExit, a gevent Timeout leave the connection
    # anywhere too; it is neither kept nor left open.
    raw = RawPool(engine)
    driver = DriverConnections(engine, SqliteDialect().is_transient, raw)
    used: list[Any] = []

    def write(conn: Any) -> None:
        used.append(conn)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        driver.run(write)
    assert _closed(used[0]) and not raw._idle and not raw._made
    driver.close()


def test_it_holds_keep_connections_at_most_then_the_pool_serves(engine: sa.Engine) -> None:
    # The engine's pool_size, max_overflow and pool_timeout bound every connection beyond its
    # own: with `keep` in use, a write takes a pooled one.
    raw = RawPool(engine, keep=1)
    driver = DriverConnections(engine, SqliteDialect().is_transient, raw)
    checkouts: list[Any] = []
    sa.event.listen(engine, "checkout", lambda conn, _rec, _proxy: checkouts.append(conn))
    try:
        mine = driver.run(lambda conn: conn)  # made by the engine (one checkout), then kept
        assert len(checkouts) == 1
        held = raw.get()
        assert held is mine and raw.get() is None
        pooled = driver.run(lambda conn: conn)
        assert pooled is not mine and len(checkouts) == 2 and not raw._idle
        raw.put(held)
        assert driver.run(lambda conn: conn) is mine and len(checkouts) == 2
    finally:
        driver.close()


def test_a_connection_returned_after_close_is_closed(engine: sa.Engine) -> None:
    # A write still running as the store closes gives its connection back afterwards.
    raw = RawPool(engine)
    conn = raw.get()
    raw.close()
    raw.put(conn)
    assert _closed(conn) and not raw._idle


def test_a_connection_being_made_counts_against_keep(engine: sa.Engine) -> None:
    # Two writes at once on a pool that keeps one: while the first one's connection is being
    # made (a slow connect), the second takes a pooled one instead of making a second own.
    raw = RawPool(engine, keep=1)
    connecting, release = threading.Event(), threading.Event()

    @sa.event.listens_for(engine, "connect")
    def _slow(_dbapi_conn: Any, _record: Any) -> None:
        if not connecting.is_set():
            connecting.set()
            release.wait(10)

    got: list[Any] = []
    first = threading.Thread(target=lambda: got.append(raw.get()))
    first.start()
    try:
        assert connecting.wait(10)
        assert raw.get() is None
    finally:
        release.set()
        first.join(10)
    assert got and got[0] is not None
    raw.put(got[0])
    assert raw.get() is got[0]
    raw.close()
