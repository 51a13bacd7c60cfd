"""PostgreSQL connections that never wait on the server longer than the store's ``timeout_s``.

Imported only when a PostgreSQL store is opened (it imports psycopg).

A frozen server process, or a network cut, leaves a connection that the kernel still keeps: the
query is acknowledged, TCP keepalives are answered (by the server's kernel, when only the process
is frozen), and libpq waits for an answer forever. The server-side ``statement_timeout`` cannot
help when the server does not run. So the client keeps its own deadline on every wait for the
server (:class:`BoundedConnection`); a connection that missed it is closed, which SQLAlchemy sees
as a disconnection and drops from its pool, never to be handed out half-way through a statement.
"""

from __future__ import annotations

from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa
from psycopg.abc import PQGen
from sqlalchemy import event

from .timeouts import postgres_params

RV = TypeVar("RV")


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait for the server (a statement, its results, a commit)
    gives up after ``read_timeout_s``: the connection is then closed and an
    ``OperationalError`` raised. Psycopg's ``Connection.wait`` takes the deadline (psycopg 3.3)."""

    read_timeout_s: float | None = None

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        if timeout is not None or self.read_timeout_s is None:
            return super().wait(gen, interval, timeout)
        try:
            return super().wait(gen, interval, self.read_timeout_s)
        except psycopg.errors._WaitTimeout as exc:
            # Half-way through a statement: unusable. Closed, SQLAlchemy invalidates it.
            self.pgconn.finish()
            raise psycopg.OperationalError(
                f"no answer from the server within {self.read_timeout_s:g} s: connection closed"
            ) from exc


def install(engine: sa.Engine, timeout_s: float) -> None:
    """Open ``engine``'s connections as :class:`BoundedConnection`, with the timeouts of
    :func:`.timeouts.postgres_params`."""

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        conn = BoundedConnection.connect(*cargs, **postgres_params(cparams, timeout_s))
        conn.read_timeout_s = timeout_s
        return conn
