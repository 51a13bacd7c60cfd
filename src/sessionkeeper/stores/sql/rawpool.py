"""Idle raw driver connections for the one-session write path (:mod:`.fastsave`) on SQLite.

SQLite's whole write of a changed session takes tens of microseconds; checking a connection out
of SQLAlchemy's pool and back in (its fairy, events and reset-on-return rollback) cost about
10 µs of it. So the fast path keeps its own few connections: each one is made by the engine
(``engine.raw_connection()``, so every ``connect`` listener ran: the pragmas, a test's trace) and
then detached from the engine's pool, which no longer counts or closes it. Taking and returning
one is a ``deque`` pop and append, atomic under the GIL.

A connection whose write raised is closed, not kept (the error may have left it anywhere). A
forked child forgets the parent's connections without closing them, as the engine's pool does.
"""

from __future__ import annotations

import collections
import contextlib
from typing import Any

import sqlalchemy as sa

#: Idle connections kept; more may be open at once, the extra ones closed when returned.
KEEP = 4


class RawPool:
    def __init__(self, engine: sa.Engine, keep: int = KEEP) -> None:
        self._engine = engine
        self._keep = keep
        self._idle: collections.deque[Any] = collections.deque()

    def get(self) -> Any:
        """An idle driver connection, or a new one made by the engine."""
        try:
            return self._idle.pop()
        except IndexError:
            pass
        fairy = self._engine.raw_connection()
        conn = fairy.driver_connection
        fairy.detach()  # ours from now on: the engine's pool neither counts nor closes it
        return conn

    def put(self, conn: Any) -> None:
        """Return ``conn`` after a write that ended its transaction."""
        if len(self._idle) < self._keep:
            self._idle.append(conn)
        else:
            self.discard(conn)

    @staticmethod
    def discard(conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        while self._idle:
            self.discard(self._idle.pop())

    def forget(self) -> None:
        """After a fork: the connections are the parent's; dropped unclosed."""
        self._idle = collections.deque()
