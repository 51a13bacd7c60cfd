"""The two ways :mod:`.transport` uses nats-py's client below its coroutine API, in one place.

Every ``ack="sync"`` request waits on one message each way, so what nats-py spends per message
is paid per changed request. Through its coroutine API a message costs several event-loop
iterations at each end: a published one waits for the flusher task (a queue put, a task wake),
a received one goes through the subscription's queue to the subscription's task, and a request
adds a task, a future, a ``wait_for`` timer and an inbox entry. Here instead:

* :class:`Sink` is handed to ``subscribe(future=...)``: nats-py then gives each message to its
  ``set_result`` inside the read loop, as it parses it (the path of its one-reply requests),
  with no queue and no task; the sink never becomes done, so it serves every message.
* :func:`write_now` writes a ``PUB`` to the connection's socket at once, after whatever
  nats-py had queued (so the order on the wire is the order of the calls); the socket's own
  buffer takes what the kernel does not. It must run on the loop thread, and it declines (the
  caller then publishes through nats-py) when the client is not connected, so that nats-py's
  buffering during a reconnect still applies.

Both read nats-py attributes that are not documented (``_pending``, ``_pending_data_size``,
``_transport``); ``tests/replication/test_natsio.py`` pins them on the installed version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("sessionkeeper.replication")

NO_RESPONDERS = "503"  # the status nats-server sends to a request's inbox that nobody serves


class Sink:
    """A subscription's ``future`` that hands every message to ``fn`` in the read loop.

    ``fn`` runs on the loop thread, between two parsed messages: it must not block, and what it
    raises is logged here (nats-py would otherwise treat it as a protocol error)."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[[Any], None]) -> None:
        self._fn = fn

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    def set_result(self, msg: Any) -> None:
        try:
            self._fn(msg)
        except Exception:
            log.exception("replication: handling a message failed")


def write_now(nc: Any, subject: str, reply: str, data: bytes) -> bool:
    """Write a ``PUB`` of ``data`` to ``nc``'s socket now (on the loop thread); whether it was
    written. ``False`` when the client is not connected, when ``data`` is over the server's
    ``max_payload`` (nats-server would close the connection; nats-py's publish refuses it with
    its own error), or when this nats-py lacks the attributes used here: the caller then
    publishes through nats-py."""
    transport = getattr(nc, "_transport", None)
    if not nc.is_connected or nc.is_closed or transport is None:
        return False
    if len(data) > nc.max_payload or not hasattr(nc, "_pending_data_size"):
        return False
    if getattr(nc, "_pending", None):  # queued by nats-py, not flushed yet: those go first
        transport.writelines(nc._pending)
        nc._pending = []
        nc._pending_data_size = 0
    transport.write(b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply.encode(), len(data), data))
    return True


def no_responders(msg: Any) -> bool:
    """Whether ``msg`` is the server's answer that nobody subscribes to the request's subject."""
    headers = msg.headers
    return bool(headers) and headers.get("Status") == NO_RESPONDERS and not msg.data
