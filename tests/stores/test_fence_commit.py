"""The deadline fence (src/sessionkeeper/stores/fence.py) tested just before the ``COMMIT`` of a
write of several statements, on the real servers: a server that began the write in time but
reaches its ``COMMIT`` only after the fence commits nothing and answers FENCED.

The server is made late mid-write by a row lock another connection holds: the write's first
statements run in time, one blocks on the lock, and the lock is released only once the server's
clock is past the write's fence (``margin_s`` is shortened, so that this comes long before any
of the store's timeouts). Paths: PostgreSQL's batch (``BEGIN``, statements, ``COMMIT`` in one
pipeline) and MariaDB's multi-statement text, of one session or several.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from sessionkeeper.stores import RetryPolicy, SaveResult, SaveStatus
from sessionkeeper.stores.sql import SqlStore
from tests import services

from .contract import req, tok

#: The fence's margin in these tests: the time the server has to begin a write.
MARGIN_S = 0.3
#: The bound on each wait below (for the lock wait to show, for the server's clock to pass).
WAIT_S = 10.0
#: Between two looks: more than InnoDB's 0.1 s, within which a read of ``INNODB_TRX`` is served
#: from the cache the last read filled (a faster poll never sees the lock wait begin).
POLL_S = 0.15
#: Per dialect: the connection's id, the connections waiting for a lock, the server's time.
_SQL = {
    "postgresql": (
        "SELECT pg_backend_pid()",
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        "SELECT extract(epoch FROM clock_timestamp())::float8",
    ),
    "mysql": (
        "SELECT CONNECTION_ID()",
        "SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX "
        "WHERE trx_state = 'LOCK WAIT'",
        "SELECT UNIX_TIMESTAMP(SYSDATE(6))",
    ),
}


@pytest.fixture(params=["postgresql", "mysql"])
def store(request: pytest.FixtureRequest) -> Iterator[SqlStore]:
    url = request.getfixturevalue("postgres_url" if request.param == "postgresql" else "mysql_url")
    # pool_size 1: the write's connection is the one whose id is read before it (on MariaDB the
    # fast path's own, stores/sql/rawpool.py: one, as one write at a time made it).
    s = SqlStore(
        url,
        table_prefix=services.unique_name("skfence"),
        pool_size=1,
        max_overflow=0,
        retry=RetryPolicy(attempts=1, backoff_s=0),
    )
    try:
        yield s
    finally:
        s.tables.metadata.drop_all(s.engine)
        s.close()


def _until(done: Callable[[], bool], what: str) -> None:
    stop = threading.Event()
    for _ in range(int(WAIT_S / POLL_S)):
        if done():
            return
        stop.wait(POLL_S)
    pytest.fail(f"not within {WAIT_S} s: {what}")


def _stalled(
    store: SqlStore, locked: sa.Select[Any], write: Callable[[], list[SaveResult]]
) -> list[SaveResult]:
    """``write()`` run while another connection holds the lock of ``locked``'s rows, released
    once ``write`` waits for it and the server's clock is past the fence of what it sent; sent
    again after that (the shared rules' resend), it has the store's own margin."""
    own_id, waiting, server_now = _SQL[store.engine.dialect.name]
    if store._raw is not None:  # MariaDB: the write takes the fast path's one idle connection
        [(raw, _made)] = store._raw._idle
        write_id = raw.thread_id()
    else:
        with store.engine.connect() as conn:
            write_id = conn.exec_driver_sql(own_id).scalar_one()
    clock = store.server_clock
    assert clock is not None and clock.measurements  # measured: the write sends no probe
    margin_s, clock.margin_s = clock.margin_s, MARGIN_S
    other = sa.create_engine(store.engine.url, poolclass=sa.pool.NullPool)
    results: list[SaveResult] = []
    try:
        with other.connect() as holder, other.connect() as watcher:
            holder.execute(locked.with_for_update()).all()
            writer = threading.Thread(target=lambda: results.extend(write()))
            writer.start()

            def blocked() -> bool:
                ids = watcher.exec_driver_sql(waiting).scalars().all()
                watcher.rollback()  # MariaDB: a fresh read of INNODB_TRX each time
                return write_id in ids

            _until(blocked, "the write waits for the lock")
            fence = clock.fence(lambda: pytest.fail("the offset was measured again"))

            def past() -> bool:
                now = watcher.exec_driver_sql(server_now).scalar_one()
                watcher.rollback()
                return float(now) > fence

            _until(past, "the server's clock passes the write's fence")
            clock.margin_s = margin_s  # the fence of any write sent from now on, as configured
            holder.rollback()
            writer.join(WAIT_S)
            assert not writer.is_alive()
    finally:
        other.dispose()
    return results


def _stored(store: SqlStore, i: int) -> tuple[int, dict[str, bytes]] | None:
    got = store.load("shop", tok(i))
    return None if got is None else (got.version, dict(got.attributes))


def test_a_batch_that_reaches_its_commit_after_its_fence_commits_nothing(
    store: SqlStore,
) -> None:
    store.save_many([req(tok(1), 0, {"a": b"1"}), req(tok(2), 0, {"a": b"1"})])
    s = store.tables.sessions
    # tok(1)'s statements run in time; tok(2)'s (after it, in token order) waits for the lock.
    locked = sa.select(s.c.version).where(s.c.app == "shop", s.c.token == tok(2))
    batch = [req(tok(1), 1, {"a": b"2"}), req(tok(2), 1, {"a": b"2"})]
    results = _stalled(store, locked, lambda: store._save_batch(batch))
    assert [r.status for r in results] == [SaveStatus.FENCED, SaveStatus.FENCED]
    assert _stored(store, 1) == _stored(store, 2) == (1, {"a": b"1"})


def test_a_batch_refused_at_its_commit_is_sent_again_and_written_once(store: SqlStore) -> None:
    # Through the shared rules (fence.unfenced): the refused batch is known not applied, so it
    # is sent again at once after measuring the server's clock again, and written once.
    store.save_many([req(tok(1), 0, {"a": b"1"}), req(tok(2), 0, {"a": b"1"})])
    s = store.tables.sessions
    locked = sa.select(s.c.version).where(s.c.app == "shop", s.c.token == tok(2))
    clock = store.server_clock
    assert clock is not None
    measured = clock.measurements
    batch = [req(tok(1), 1, {"a": b"2"}), req(tok(2), 1, {"a": b"2"})]
    results = _stalled(store, locked, lambda: store.save_many(batch))
    assert [(r.status, r.version) for r in results] == [(SaveStatus.SAVED, 2)] * 2
    assert store.stats.writes_fenced == 2 and clock.measurements == measured + 1
    assert _stored(store, 1) == _stored(store, 2) == (2, {"a": b"2"})


# On PostgreSQL one session's write is one statement in autocommit, fenced as it begins: its
# window is the statement itself.
@pytest.mark.parametrize("store", ["mysql"], indirect=True)
def test_a_session_that_reaches_its_commit_after_its_fence_commits_nothing(
    store: SqlStore,
) -> None:
    # One session on MariaDB: a text of several statements, the session row's update first,
    # then the attribute upsert, which waits for the lock.
    store.save_many([req(tok(1), 0, {"a": b"1"})])
    a = store.tables.attributes
    locked = sa.select(a.c.value).where(a.c.app == "shop", a.c.token == tok(1), a.c.name == "a")
    results = _stalled(store, locked, lambda: store._save_batch([req(tok(1), 1, {"a": b"2"})]))
    assert [r.status for r in results] == [SaveStatus.FENCED]
    assert _stored(store, 1) == (1, {"a": b"1"})
