"""``SqlStore``: sessions in SQLite, PostgreSQL or MySQL/MariaDB, through SQLAlchemy Core.

This module holds the engine: URLs, pools, transactions, fork safety, the schema check on first
use, and which driver errors are worth a retry. The statements themselves are in :mod:`.ops`
(a one-session write first tries the one-round-trip path of :mod:`.fastsave`, and so does a
batch of several sessions on PostgreSQL and MySQL/MariaDB), the differences
between databases in :mod:`.dialects`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ...errors import ConfigurationError
from ..base import (
    AppCounts,
    ExpiredSession,
    Invalidation,
    RetryPolicy,
    SaveRequest,
    SaveResult,
    Store,
    StoredSession,
    Touch,
)
from ..fence import MARGIN_SHARE, ServerClock
from . import feed, owners
from . import schema as sch
from .dialects import dialect_for, normalize_url
from .fastsave import fast_save_for
from .ops import SqlOps
from .rawpool import DriverConnections, Dropped, RawPool, TransientSqlError
from .schema import Layout
from .timeouts import DEFAULT_TIMEOUT_S

T = TypeVar("T")

_TABLE_PREFIX_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


class SqlStore(Store):
    """Sessions in a SQL database. ``url_or_engine``: ``sqlite:///path.db``,
    ``postgresql://user@host/db`` (psycopg 3), ``mysql://`` or ``mariadb://`` (PyMySQL), or an
    ``sqlalchemy.Engine`` of one of those (used as given; not disposed by :meth:`close`).

    ``timeout_s`` bounds each wait for the server on PostgreSQL and MySQL/MariaDB: to connect,
    for a pooled connection, for a statement's answer (see :mod:`.timeouts`). The first attempt
    after the server hangs waits about twice that (the statement on a pooled connection, then
    the call once more on a new connection: ``_reconnecting``), each later one once; the call
    gives up with ``StoreUnavailable`` after the retries. An engine you pass keeps its own
    settings.

    Thread safe: each call checks a connection out of the engine's pool. Fork safe: a forked
    child drops the pool inherited from the parent, right after the fork, without closing its
    sockets (``Store._after_fork``).
    The tables are created on first use when ``create_schema`` (see :meth:`init_schema`).
    """

    transient_errors = (TransientSqlError,)

    def __init__(
        self,
        url_or_engine: str | sa.Engine,
        *,
        layout: Layout | str = Layout.MULTI_ROW,
        table_prefix: str = "sessionkeeper_",
        schema: str | None = None,
        pool_size: int | None = None,
        max_overflow: int | None = None,
        pool_timeout_s: float | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        create_schema: bool = True,
    ) -> None:
        super().__init__(retry=retry, sleep=sleep)
        self.timeout_s = timeout_s
        try:
            self.layout = Layout(layout)
        except ValueError:
            raise ConfigurationError(
                f"layout must be 'multi_row' or 'single_row', got {layout!r}"
            ) from None
        if not table_prefix or set(table_prefix) - _TABLE_PREFIX_CHARS or len(table_prefix) > 40:
            raise ConfigurationError(
                f"table_prefix must be 1-40 letters, digits or underscores, got {table_prefix!r}"
            )
        self._owns_engine = not isinstance(url_or_engine, sa.Engine)
        if isinstance(url_or_engine, sa.Engine):
            self.engine = url_or_engine
            self._dialect = dialect_for(self.engine.dialect.name, timeout_s)
        else:
            self.engine = self._create_engine(
                url_or_engine, pool_size, max_overflow, pool_timeout_s, timeout_s
            )
            self._dialect = dialect_for(self.engine.dialect.name, timeout_s)
        self._dialect.prepare_engine(self.engine, owned=self._owns_engine)
        self.tables = sch.make_tables(table_prefix, schema)
        self._ops = SqlOps(self.tables, self.layout, self._dialect)
        # One session's write on the raw driver (see .fastsave); multi_row only, since a
        # single_row write of some attributes must read the stored blob first.
        multi = self.layout is Layout.MULTI_ROW
        self._fast = fast_save_for(self.tables, self.engine.dialect) if multi else None
        fast = self._dialect.name if self._fast is not None else None  # the fast path's database
        # SQLite and MySQL: the fast path's connections bypass SQLAlchemy's pool (see .rawpool).
        self._raw = (
            RawPool(
                self.engine,
                recycle_s=self._dialect.engine_options().get("pool_recycle", -1),
                ping=fast == "mysql",
            )
            if fast in ("sqlite", "mysql") and self._owns_engine
            else None
        )
        self._driver = DriverConnections(self.engine, self._dialect.is_transient, self._raw)
        #: The server's clock, for the fast path's deadline fences (:mod:`..fence`); SQLite
        #: runs in this process (a write cannot outlive its caller's wait): none.
        self.server_clock = (
            ServerClock(timeout_s * MARGIN_SHARE) if fast not in (None, "sqlite") else None
        )
        self._create_schema = create_schema
        self._ready = False
        self._ready_lock = threading.Lock()

    def _after_fork(self) -> None:
        # The pooled connections belong to the parent: forget them, unclosed.
        self.engine.dispose(close=False)
        self._driver.forget()
        self._ready_lock = threading.Lock()

    def _create_engine(
        self,
        url: str,
        pool_size: int | None,
        max_overflow: int | None,
        pool_timeout_s: float | None,
        timeout_s: float,
    ) -> sa.Engine:
        parsed = normalize_url(url)
        options = dialect_for(parsed.get_backend_name(), timeout_s).engine_options()
        for name, value in (
            ("pool_size", pool_size),
            ("max_overflow", max_overflow),
            ("pool_timeout", pool_timeout_s),
        ):
            if value is not None:
                options[name] = value
        try:
            return sa.create_engine(parsed, **options)
        except ImportError as exc:
            raise ConfigurationError(
                f"the driver for {parsed.drivername} is not installed ({exc}): "
                "pip install 'sessionkeeper[postgres]' or 'sessionkeeper[mysql]'"
            ) from exc
        except (sa.exc.ArgumentError, TypeError) as exc:
            raise ConfigurationError(f"cannot open {parsed!r}: {exc}") from exc

    @property
    def kind(self) -> str:  # type: ignore[override]  # a class variable in the base; per engine here
        return self._dialect.name

    def describe(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def init_schema(self) -> None:
        """Create the tables and the schema-version row if they are missing (idempotent, safe
        when several processes do it at once), then check the database is one this code can
        read. ``sessionkeeper init-db URL`` calls this."""
        self._call("init_schema", lambda: self._guard(self._init_schema))

    # -- transactions ----------------------------------------------------------------------------

    def _init_schema(self) -> None:
        sch.create_schema(
            lambda: self._tx(write=True), self.tables, self.layout, self._dialect.is_transient
        )
        self._ready = True

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            with self._tx(write=False) as conn:
                self.max_value_bytes = self._ops.max_value_bytes = self._dialect.max_value_bytes(
                    conn
                )
            if self._create_schema:
                self._init_schema()
            else:
                with self._tx(write=False) as conn:
                    sch.check_schema(conn, self.tables, self.layout)
                self._ready = True

    @contextmanager
    def _tx(self, *, write: bool) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(**self._dialect.begin_options(write=write))
            with conn.begin():
                yield conn

    def _guard(self, fn: Callable[[], T]) -> T:
        """Run ``fn``, turning retryable driver errors into :class:`TransientSqlError`."""
        try:
            return fn()
        except (sa.exc.DisconnectionError, sa.exc.TimeoutError) as exc:
            raise TransientSqlError(str(exc)) from exc
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated or self._dialect.is_transient(exc.orig):
                raise TransientSqlError(str(exc.orig)) from exc
            raise

    def _run(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        """``fn`` in one transaction; a write that lost a race to create a row is run again."""

        def attempt() -> T:
            for n in range(3):
                try:
                    with self._tx(write=write) as conn:
                        return fn(conn)
                except sa.exc.IntegrityError:
                    if not write or n == 2:
                        raise
            raise AssertionError("unreachable")  # pragma: no cover

        return self._guard(lambda: self._reconnecting(attempt))

    def _reconnecting(self, call: Callable[[], T]) -> T:
        """``call()``, once more at once if it met a dropped connection (a pooled connection
        whose server closed it: restarted, idle timeout, ``pg_terminate_backend``), which
        SQLAlchemy then invalidated with every connection of its pool as old; the fast path's
        own idle ones are closed too, since the server dropped those with it. Nothing pings a
        connection before use (MySQL's fast path, only one it makes: ``.rawpool``); a second
        failure is the store's to retry, with backoff.
        Running a call again is what those retries do already: every write is checked by
        version (or idempotent), so one that did commit before its answer was lost is merged."""
        self._ensure_ready()
        try:
            return call()
        except sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            self._driver.dropped_elsewhere()
        except Dropped:
            pass
        return call()

    # -- the hooks: each one transaction -------------------------------------------------------

    def _load(self, app: str, token: str) -> StoredSession | None:
        return self._run(lambda conn: self._ops.load(conn, app, token), write=False)

    def _save_batch(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        if not self._ready:
            # The store's first call: ``save_many`` checked the values before the limit was
            # known, which connecting learns.
            self._guard(self._ensure_ready)
            self._check_value_sizes(requests)
        if self._fast is not None and len(requests) == 1:
            saved = self._guard(lambda: self._reconnecting(lambda: self._fast_save(requests[0])))
            if saved is not None:
                return [saved]
            # The version check did not pass and nothing was written: the general path locks
            # the row and answers CONFLICT (merged), GONE, or SAVED after a race.
        elif self._batched(requests):
            saved_many = self._fast_save_many(requests)
            if saved_many is not None:
                return saved_many

        def save(conn: Connection) -> list[SaveResult]:
            # Again here: the first call learns the server's limit on connecting.
            self._check_value_sizes(requests)
            return self._ops.save(conn, requests)

        return self._run(save, write=True)

    def _batched(self, requests: Sequence[SaveRequest]) -> bool:
        """Whether a batch of several sessions goes through the fast path's one transaction
        (``FastSave.save_many``): each session once, and few."""
        if self._fast is None or not self._fast.batches or len(requests) > self._fast.max_batch:
            return False
        return len({(r.app, r.token) for r in requests}) == len(requests)

    def _fast_save_many(self, requests: Sequence[SaveRequest]) -> list[SaveResult] | None:
        """A group commit's batch in one transaction (one round trip on a server); the sessions
        whose version check did not pass (nothing written for them) then take the general path
        together. ``None``: the fast path wrote nothing and declined the batch."""
        fast = self._fast
        assert fast is not None
        got = self._guard(
            lambda: self._reconnecting(
                lambda: self._driver.run(
                    lambda raw: fast.save_many(raw, requests, self.server_clock)
                )
            )
        )
        if got is None:
            return None
        rest = [i for i, res in enumerate(got) if res is None]
        if rest:
            general = self._run(
                lambda conn: self._ops.save(conn, [requests[i] for i in rest]), write=True
            )
            for i, res in zip(rest, general, strict=True):
                got[i] = res
        return [res for res in got if res is not None]

    def _fast_save(self, request: SaveRequest) -> SaveResult | None:
        """``request`` through :mod:`.fastsave` on a raw driver connection."""
        assert self._fast is not None
        fast = self._fast
        return self._driver.run(lambda raw: fast.save(raw, request, self.server_clock))

    def _fenced(self) -> None:
        if self.server_clock is not None:
            self.server_clock.forget()

    def _touch_batch(self, touches: Sequence[Touch]) -> None:
        latest: dict[tuple[str, str], float] = {}
        for t in touches:
            key = (t.app, t.token)
            latest[key] = max(latest.get(key, t.last_access_at), t.last_access_at)
        self._run(lambda conn: self._ops.touch(conn, latest), write=True)

    def _delete(self, app: str, token: str, tombstone_until: float) -> bool:
        return self._run(
            lambda conn: self._ops.delete(conn, app, token, tombstone_until), write=True
        )

    def _invalidations_since(
        self, cursor: str | None, limit: int
    ) -> tuple[list[Invalidation], str]:
        return self._run(lambda conn: feed.since(conn, self.tables, cursor, limit), write=False)

    def _delete_expired(self, before: float, limit: int) -> list[ExpiredSession]:
        return self._run(lambda conn: self._ops.delete_expired(conn, before, limit), write=True)

    def _counts(self, now: float) -> dict[str, AppCounts]:
        return self._run(lambda conn: self._ops.counts(conn, now), write=False)

    def _sessions_of(self, app: str, owner: str) -> list[StoredSession]:
        return self._run(lambda conn: owners.sessions_of(self._ops, conn, app, owner), write=False)

    def _list_sessions(self, app: str, after: str | None, limit: int) -> list[StoredSession]:
        return self._run(
            lambda conn: owners.list_sessions(self._ops, conn, app, after, limit), write=False
        )

    def _close(self) -> None:
        self._driver.close()
        if self._owns_engine:
            self.engine.dispose()


__all__ = ["Layout", "SqlStore", "TransientSqlError"]
