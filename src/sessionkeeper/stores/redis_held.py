"""Connections kept out of a redis-py pool between one-command calls (a request's write or load).

redis-py's ``Redis.execute_command`` takes a connection from the pool and gives it back on every
call: a lock each way, a non-blocking ``recv`` to check the connection, two ``settimeout``
calls, the retry wrapper and its observability hooks. That is some 30 µs of client CPU per call
on this machine, against about 20 µs for sending the command and parsing its reply, and a request
that changed its session makes one call. :class:`HeldConnections` keeps the connections it took
from the pool on a free list of its own, so a call in a steady process goes to the server with no
pool bookkeeping.

What the pool did, and how it is still done:

- **A connection that went bad** (reset, closed by the server or a proxy, a read timeout that
  left half a reply): any error other than an error reply disconnects it and hands it back to the
  pool, and every other kept connection goes back too, disconnected, so that the retry (the store
  base's) connects afresh. On Sentinel the fresh connection asks the sentinels for the master, so
  a failover is followed at once; a demoted master's ``READONLY`` is turned into a connection
  error by redis-py's Sentinel connection, which lands here too.
- **A connection left idle** longer than :data:`IDLE_S` is given back to the pool and taken again
  through it, which checks it (the pool's ``can_read``) before the call: a connection closed by a
  server ``timeout`` or a NAT while idle is replaced, not used.
- **After fork** the child's list is emptied without closing anything: those sockets are the
  parent's (the pool itself resets in the child).
- **Close** gives every kept connection back to the pool; the pool's owner closes the pool (the
  store closes a client it built, never one it was given).

Thread safe: ``list.pop`` and ``list.append`` are atomic, and a connection is on the list only
while no thread uses it. The list holds at most as many connections as threads ever called at
once. A client with a connection of its own (``single_connection_client``) is used as it is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import redis.exceptions as rex

#: Seconds a kept connection may sit unused before it is checked again by the pool.
IDLE_S = 2.0


class HeldConnections:
    def __init__(self, client: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.pool = client.connection_pool
        self._clock = clock
        self._free: list[tuple[Any, float]] = []
        self._pid = os.getpid()
        #: Whether calls bypass the pool: not for a client with one connection of its own, nor
        #: for a pool with client-side caching (its connections wrap the replies).
        self.enabled = (
            getattr(client, "connection", None) is None
            and getattr(self.pool, "cache", None) is None
        )

    def execute(self, *args: Any) -> Any:
        """``client.execute_command(*args)``, on a kept connection."""
        if not self.enabled:
            return self.client.execute_command(*args)
        conn = self._take()
        try:
            conn.send_command(*args)
            reply = self.client.parse_response(conn, args[0])
        except rex.ResponseError:  # an error reply: the connection is as good as before
            self._free.append((conn, self._clock()))
            raise
        except BaseException:
            self._discard(conn)
            raise
        self._free.append((conn, self._clock()))
        return reply

    def _forget_if_forked(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's sockets are not ours
            self._free, self._pid = [], os.getpid()

    def _take(self) -> Any:
        self._forget_if_forked()
        try:
            conn, used = self._free.pop()
        except IndexError:
            return self.pool.get_connection()
        if self._clock() - used > IDLE_S:
            self.pool.release(conn)  # taken again through the pool, which checks it first
            return self.pool.get_connection()
        return conn

    def _discard(self, conn: Any) -> None:
        """``conn`` failed: it and every kept one go back to the pool, disconnected."""
        conn.disconnect()
        self.pool.release(conn)
        self.release_all(disconnect=True)

    def release_all(self, *, disconnect: bool = False) -> None:
        """Give every kept connection back to the pool (on close, or after a failure)."""
        self._forget_if_forked()
        while True:
            try:
                conn, _used = self._free.pop()
            except IndexError:
                return
            if disconnect:
                conn.disconnect()
            self.pool.release(conn)

    def kept(self) -> int:
        """Connections on the free list now (for tests and stats)."""
        return len(self._free)
