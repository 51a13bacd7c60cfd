"""The driver connections of the one-session write path (:mod:`.fastsave`): on SQLite and
MySQL/MariaDB its own idle ones (:class:`RawPool`), elsewhere the engine's pooled ones, and what a
driver error on either means (:class:`DriverConnections`).

SQLite's whole write of a changed session takes tens of microseconds; checking a connection out
of SQLAlchemy's pool and back in (its fairy, events and reset) cost about 10 µs of it, and about
30 µs of client CPU of a MariaDB write's 200. So the fast path keeps its own few connections:
each one is made by the engine (``engine.raw_connection()``, so every ``connect`` listener ran:
the pragmas, the client flags, the session's timeouts, a test's trace) and then detached from
the engine's pool, which no longer counts or closes it. Taking and returning one is a ``deque``
pop and append, atomic under the GIL.

What the engine's pool does for its own connections, this does for these:

* it holds at most ``keep`` connections, idle and in use together: a write that finds none
  idle while ``keep`` are in use takes a pooled one instead (:meth:`DriverConnections.run`), so
  the engine's ``pool_size``, ``max_overflow`` and ``pool_timeout`` still bound the rest;
* with ``ping`` (MySQL), a connection the engine's pool hands over is pinged first; one the
  server dropped (the pool's idle ones die with a server restart, unknown to the pool) marks
  the pool's older connections stale, as a dropped pooled connection does, and a fresh one is
  taken: one round trip per connection made, none per write;
* a connection older than ``recycle_s`` (the engine's ``pool_recycle``) is closed when taken,
  and a new one made, before the server's idle timeout can drop it;
* a connection whose write raised is closed, not kept (the error may have left it anywhere);
* after a write met a dropped connection (a server restart ends them all), every idle one is
  closed too (:meth:`discard_idle`), as SQLAlchemy invalidates the older connections of its
  pool: the next write makes a fresh one instead of failing on each stale one in turn;
* a forked child forgets the parent's connections without closing them; once closed, a
  connection returned is closed too.

The write path that uses it runs at most one batch at a time per manager (group commit), so few
are in use at once.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa

T = TypeVar("T")


class TransientSqlError(Exception):
    """A driver error that retrying may fix (connection lost or refused, lock timeout,
    deadlock). The base class retries it and then raises ``StoreUnavailable``."""


class Dropped(TransientSqlError):
    """The fast path's connection was found closed by the server: the store runs the call
    once more at once (``SqlStore._reconnecting``)."""


#: The most connections of its own the fast path holds, idle and in use.
KEEP = 4
#: How many connections of the engine's pool a ``get`` tries, each pinged: the first that does
#: not answer makes the pool replace all its older ones, so the next is a new connection.
TRIES = 2


class RawPool:
    def __init__(
        self,
        engine: sa.Engine,
        keep: int = KEEP,
        *,
        recycle_s: float = -1,
        ping: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._keep = keep
        self._recycle_s = recycle_s
        self._ping = ping
        self._monotonic = monotonic
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        #: Idle connections, each with the time it was made.
        self._idle: collections.deque[tuple[Any, float]] = collections.deque()
        #: When each connection in use was made, by ``id``.
        self._made: dict[int, float] = {}
        #: Connections in use or being made: at most ``keep``.
        self._out = 0
        self._closed = False

    def get(self) -> Any | None:
        """An idle driver connection, or a new one made by the engine; ``None`` when ``keep``
        are in use (the caller takes a pooled one)."""
        while True:
            with self._lock:
                if not self._idle:
                    if self._out >= self._keep:
                        return None
                    self._out += 1  # a place for the one made below
                    break
                conn, made = self._idle.pop()
                fresh = self._recycle_s < 0 or self._monotonic() - made < self._recycle_s
                if fresh:
                    self._out += 1
                    self._made[id(conn)] = made
                    return conn
            self._close(conn)  # too old: closed outside the lock, and the next looked at
        try:
            conn = self._new()
        except BaseException:
            with self._lock:
                self._out -= 1
            raise
        with self._lock:
            self._made[id(conn)] = self._monotonic()
        return conn

    def _new(self) -> Any:
        """A connection of the engine's pool, detached: ours from now on (the pool neither
        counts nor closes it). With ``ping``, one that does not answer makes the pool replace
        it and its older connections, and the next (a new one) is taken."""
        for attempt in range(TRIES):
            fairy = self._engine.raw_connection()
            conn = fairy.driver_connection
            if self._ping:
                try:
                    assert fairy.dbapi_connection is not None  # a connection checked out
                    self._engine.dialect.do_ping(fairy.dbapi_connection)
                except Exception as exc:
                    # This one, and the pool's older ones (SQLAlchemy's own rule on a dropped
                    # connection): the next checkout makes a new connection.
                    self._engine.pool._invalidate(fairy, exc)  # which checks it back in
                    if attempt == TRIES - 1:
                        raise
                    continue
            fairy.detach()
            return conn
        raise AssertionError("unreachable")  # pragma: no cover

    def put(self, conn: Any) -> None:
        """Return ``conn`` after a write that ended its transaction."""
        with self._lock:
            made = self._made.pop(id(conn), None)
            if made is not None:
                self._out -= 1
                if not self._closed:
                    self._idle.append((conn, made))
                    return
        self._close(conn)

    def discard(self, conn: Any) -> None:
        """Close ``conn``, taken out by :meth:`get`, instead of returning it."""
        with self._lock:
            if self._made.pop(id(conn), None) is not None:
                self._out -= 1
        self._close(conn)

    def discard_idle(self) -> None:
        """Close every idle connection: a write met a dropped one, so they are likely dropped
        too (the server restarted, or ended them)."""
        with self._lock:
            idle, self._idle = list(self._idle), collections.deque()
        for conn, _ in idle:
            self._close(conn)

    @staticmethod
    def _close(conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        """Close the idle connections, and from now on each one returned."""
        with self._lock:
            self._closed = True
        self.discard_idle()

    def forget(self) -> None:
        """After a fork: the connections are the parent's; dropped unclosed."""
        self._reset()


class DriverConnections:
    """``run(write)``: ``write(driver_connection)`` on one of the fast path's own connections
    (``raw``) or, without those (or with all ``keep`` of them in use), on a pooled one with no
    SQLAlchemy ``Connection`` around it (building and closing one cost more than SQLite's whole
    write). A connection whose write raised is closed. One the server dropped raises
    :class:`Dropped`, after the connections likely dropped with it are let go too: the idle own
    ones, and the pool's older ones (as SQLAlchemy does on a ``Connection``). Another error
    ``is_transient`` says a retry may fix raises :class:`TransientSqlError`."""

    def __init__(
        self, engine: sa.Engine, is_transient: Callable[[BaseException], bool], raw: RawPool | None
    ) -> None:
        self._engine = engine
        self._is_transient = is_transient
        self._raw = raw

    def run(self, write: Callable[[Any], T]) -> T:
        if self._raw is None:
            return self._on_pooled(write)
        try:
            conn = self._raw.get()
        except Exception as exc:  # every connection the pool gave was dropped by the server
            self._raise_if_transient(exc)
            raise
        if conn is None:  # as many of its own in use as it keeps
            return self._on_pooled(write)
        try:
            done = write(conn)
        except BaseException as exc:
            self._raw.discard(conn)
            if isinstance(exc, Exception):
                if self._is_disconnect(exc, conn):
                    self._raw.discard_idle()
                    raise Dropped(str(exc)) from exc
                self._raise_if_transient(exc)
            raise
        self._raw.put(conn)
        return done

    def _on_pooled(self, write: Callable[[Any], T]) -> T:
        fairy = self._engine.raw_connection()
        try:
            return write(fairy.driver_connection)
        except Exception as exc:
            if self._is_disconnect(exc, fairy.driver_connection):
                self._engine.pool._invalidate(fairy, exc)  # this one, and the older ones
                raise Dropped(str(exc)) from exc
            if self._is_transient(exc):
                fairy.invalidate(exc)
                raise TransientSqlError(str(exc)) from exc
            raise
        finally:
            fairy.close()

    def _raise_if_transient(self, exc: Exception) -> None:
        """Raise :class:`TransientSqlError` from ``exc`` when a retry may fix it."""
        if self._is_transient(exc):
            raise TransientSqlError(str(exc)) from exc

    def _is_disconnect(self, exc: Exception, driver_connection: Any) -> bool:
        """Whether ``exc``, raised on ``driver_connection``, says the server dropped it."""
        dialect = self._engine.dialect
        return isinstance(exc, dialect.loaded_dbapi.Error) and dialect.is_disconnect(
            exc, driver_connection, None
        )

    def dropped_elsewhere(self) -> None:
        """The general path met a dropped connection: the own idle ones likely are too."""
        if self._raw is not None:
            self._raw.discard_idle()

    def close(self) -> None:
        if self._raw is not None:
            self._raw.close()

    def forget(self) -> None:
        """After a fork: the own connections are the parent's; dropped unclosed."""
        if self._raw is not None:
            self._raw.forget()
