"""``Transport``: a nats-py client on one background event-loop thread.

The loop thread is started lazily, by the first :meth:`start` in the process that uses it; a
forked child starts its own (:mod:`..forks`): the parent's thread and socket are not the child's.
Other threads call :meth:`publish` and :meth:`request`, which hand the work to the loop and wait
for it at most their bound. Incoming messages are handled by ``handler(subject, data)`` on the
loop, in arrival order per subscription (so one owner's deltas apply in the order sent), as
nats-py parses them (:mod:`.natsio`); it must not block. Its return value, if bytes, is the
reply; if a callable, that runs on one worker thread (work that may itself send a request, or
wait), and what it returns is the reply: the subscription's later messages wait for it.

While NATS is unreachable the client reconnects forever in the background: ``connected`` is
false, ``publish`` drops (counted by the caller), ``request`` answers ``None`` at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .. import forks
from .natsio import Sink, no_responders, write_now

log = logging.getLogger("sessionkeeper.replication")

Reply = bytes | None
Handler = Callable[[str, bytes], "Reply | Callable[[], Reply]"]


#: nats-py's own default: each step of a connection attempt (the TCP connect, the server's INFO,
#: the PONG to the first PING) waits at most this long.
CONNECT_TIMEOUT_S = 2.0
#: The longest :meth:`Transport.wait_first_attempt` waits after :meth:`Transport.start`: the
#: three steps of one attempt at their bound. An attempt that fails ends the wait before.
FIRST_CONNECT_S = 3 * CONNECT_TIMEOUT_S


class Transport:
    def __init__(
        self,
        url: str,
        options: Mapping[str, Any] | None,
        subjects: Callable[[], list[str]],
        handler: Handler,
        on_state: Callable[[bool], None],
        tick: tuple[float, Callable[[], None]],
    ) -> None:
        self._url = url
        self._options = dict(options or {})
        self._subjects = subjects  # read at each (re)start: the node name may change at a fork
        self._handler = handler
        self._on_state = on_state
        self._tick_s, self._tick = tick  # the heartbeat, run on the worker every period
        self._reset()
        forks.at_fork_in_child(self, Transport._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: Any = None
        self._task: asyncio.Future[None] | None = None
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        self._closing = False
        self.connected = False
        self.down_since: float | None = None  # monotonic; set while started and not connected
        self.up_since: float | None = None  # monotonic; set while connected, with ``connected``
        self._up_event = threading.Event()
        self._started_at: float | None = None  # monotonic, at start()
        self._first_done = threading.Event()  # the first attempt connected, or failed
        self._inbox = ""  # "<inbox>.<token>" is the reply subject of each request
        self._waiting: dict[str, _Waiter] = {}  # by token; the loop pops the one answered
        self._tokens = itertools.count(1)

    # -- lifetime -------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._loop is not None or self._closing:
                return
            loop = asyncio.new_event_loop()
            self._worker = concurrent.futures.ThreadPoolExecutor(1, "sessionkeeper-repl")
            self._loop = loop
            self.down_since = self._started_at = time.monotonic()
        threading.Thread(target=loop.run_forever, name="sessionkeeper-nats", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start_run(), loop)

    def wait_first_attempt(self) -> None:
        """Wait until this process's first connection attempt has connected or failed, at most
        until :data:`FIRST_CONNECT_S` after :meth:`start`; at once after that (a flag read).

        A worker connects at its first request, and a loaded machine or server can take a while
        to accept. Until it is connected no other node can reach it: a session it served
        meanwhile could be taken over from the store's copy, over its unwritten changes, and a
        takeover it made meanwhile would read that copy itself (the README's counter under
        ``gunicorn -w 4`` and ``TimeBased(10)`` read 1, 2, 2, 3, ...). NATS down ends the wait
        at once (the connection is refused); a server that does not answer, after
        :data:`CONNECT_TIMEOUT_S`."""
        started = self._started_at
        if started is None or self._first_done.is_set():
            return
        self._first_done.wait(max(0.0, started + FIRST_CONNECT_S - time.monotonic()))

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait for the first attempt (:meth:`wait_first_attempt`), then, when it did not
        connect, at most ``timeout_s`` for a connection (a reconnect under way)."""
        self.wait_first_attempt()
        return self._up_event.wait(timeout_s)

    def close(self, *, graceful: bool = True, timeout_s: float = 2.0) -> None:
        """Stop. ``graceful`` drains what was sent; otherwise the socket is dropped at once, as a
        crash would (tests use it so)."""
        with self._lock:
            loop, closing = self._loop, self._closing
            self._closing = True
        self._first_done.set()  # a wait for it ends
        if loop is None or closing:
            return
        fut = asyncio.run_coroutine_threadsafe(self._stop(graceful), loop)
        try:
            fut.result(timeout_s)
        except Exception:
            log.debug("closing the NATS connection failed", exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        if self._worker is not None:
            self._worker.shutdown(wait=False, cancel_futures=True)
        self.connected = False
        self.up_since = self.down_since = None  # closed: no gap to report

    async def _stop(self, graceful: bool) -> None:
        if self._task is not None:
            self._task.cancel()
        nc = self._nc
        if nc is None:
            return
        if graceful:
            await nc.drain()
        else:
            await nc.close()

    async def _start_run(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        import nats  # the extra sessionkeeper[nats]; imported only where replication runs

        wait_s = 0.05
        while not self._closing and self._nc is None:
            try:
                self._nc = await nats.connect(
                    servers=[self._url],
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.1,
                    connect_timeout=CONNECT_TIMEOUT_S,
                    disconnected_cb=self._down,
                    reconnected_cb=self._up,
                    error_cb=self._error,
                    **self._options,
                )
            except Exception as exc:
                self._first_done.set()
                log.warning("NATS at %s unreachable (%s): retrying", self._url, exc)
                await asyncio.sleep(wait_s)
                wait_s = min(wait_s * 2, 2.0)
        if self._nc is None:
            return
        self._inbox = self._nc.new_inbox()
        await self._nc.subscribe(f"{self._inbox}.*", future=Sink(self._on_reply))
        for subject in self._subjects():
            await self._nc.subscribe(subject, future=Sink(_Inbound(self).deliver))
        try:
            await self._nc.flush()  # connected means the server has our subscriptions
        except Exception:
            log.debug("NATS: the first flush failed", exc_info=True)
        await self._up()
        while not self._closing:
            self._submit(self._tick)
            await asyncio.sleep(self._tick_s)

    async def _up(self) -> None:
        self.up_since = time.monotonic()
        self.connected = True
        self._first_done.set()
        self.down_since = None
        self._up_event.set()
        self._submit(lambda: self._on_state(True))

    async def _down(self) -> None:
        self.connected = False
        self.up_since = None
        self.down_since = None if self._closing else time.monotonic()
        self._up_event.clear()
        self._submit(lambda: self._on_state(False))

    async def _error(self, exc: Exception) -> None:
        self._first_done.set()  # before a first connection: that attempt failed
        log.debug("NATS: %s", exc)

    def _submit(self, fn: Callable[[], object]) -> concurrent.futures.Future[object] | None:
        worker = self._worker
        if worker is None or self._closing:
            return None
        try:
            return worker.submit(_logged, fn)
        except RuntimeError:  # shut down meanwhile
            return None

    def _reply(self, reply_to: str, reply: object) -> None:
        """On the loop: send a handler's reply, if it made one and the message asked for it."""
        if reply_to and isinstance(reply, bytes) and self._nc is not None and self.connected:
            self._send(reply_to, "", reply)

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(fn, *args)

    # -- sending ----------------------------------------------------------------------------------

    def publish(self, subject: str, data: bytes) -> bool:
        """Queue ``data`` on ``subject``; whether it was handed to the client."""
        loop, nc = self._loop, self._nc
        if loop is None or nc is None or not self.connected:
            return False
        try:
            loop.call_soon_threadsafe(self._send, subject, "", data)
        except RuntimeError:  # the loop was closed meanwhile
            return False
        return True

    def request(self, subject: str, data: bytes, timeout_s: float) -> bytes | None:
        """Send and wait at most ``timeout_s`` for the reply; ``None`` when none came (timeout,
        no subscriber, not connected). Must not be called on the worker's own handling of a
        message addressed to this node (it would wait for itself).

        Every ``ack="sync"`` request waits on this path, so it is short: one
        ``call_soon_threadsafe`` whose callback writes the message to the socket, and the reply,
        addressed to ``<inbox>.<token>`` of the one reply subscription, is handed to the
        :class:`_Waiter` (a lock the calling thread blocks on) by the read loop as it is parsed."""
        loop, nc = self._loop, self._nc
        if loop is None or nc is None or not self.connected:
            return None
        token = str(next(self._tokens))
        waiter = self._waiting[token] = _Waiter()
        try:
            loop.call_soon_threadsafe(self._send, subject, f"{self._inbox}.{token}", data, token)
        except RuntimeError:  # the loop was closed meanwhile
            self._waiting.pop(token, None)
            return None
        reply = waiter.wait(timeout_s)
        self._waiting.pop(token, None)
        return reply

    def _send(self, subject: str, reply_to: str, data: bytes, token: str = "") -> None:
        """On the loop: write the message now, or, while nats-py reconnects, through its
        publish (which buffers it). A request that cannot be sent at all ends at once."""
        nc = self._nc
        try:
            if nc is not None and write_now(nc, subject, reply_to, data):
                return
            if nc is not None:
                task = asyncio.ensure_future(nc.publish(subject, data, reply=reply_to))
                task.add_done_callback(lambda t: self._published(t, token))
                return
        except Exception:
            log.debug("a message could not be sent", exc_info=True)
        self._published(None, token)

    def _published(self, task: asyncio.Future[None] | None, token: str) -> None:
        if task is not None and (task.cancelled() or task.exception() is None):
            return
        waiter = self._waiting.pop(token, None) if token else None
        if waiter is not None:
            waiter.answer(None)

    def _on_reply(self, msg: Any) -> None:
        """On the loop, from the reply subscription: wake the request that waits for it."""
        waiter = self._waiting.pop(msg.subject[len(self._inbox) + 1 :], None)
        if waiter is not None:
            waiter.answer(None if no_responders(msg) else bytes(msg.data))


class _Inbound:
    """One subscription's messages, handled in arrival order: while one's work runs on the
    worker, the later ones are held, and handled (on the loop) once its reply is sent."""

    __slots__ = ("_held", "_t")

    def __init__(self, transport: Transport) -> None:
        self._t = transport
        self._held: deque[Any] | None = None  # not None while a message's work is on the worker

    def deliver(self, msg: Any) -> None:
        if self._held is not None:
            self._held.append(msg)
        else:
            self._handle(msg)

    def _handle(self, msg: Any) -> None:
        t = self._t
        result = _logged(lambda: t._handler(msg.subject, msg.data))
        if not callable(result):
            t._reply(msg.reply, result)
            return
        fut = t._submit(result)
        if fut is None:
            return
        self._held = deque()
        fut.add_done_callback(lambda f: t._on_loop(self._resume, msg.reply, f))

    def _resume(self, reply_to: str, fut: concurrent.futures.Future[object]) -> None:
        self._t._reply(reply_to, None if fut.cancelled() else fut.result())
        held, self._held = self._held or deque(), None
        while held:
            self._handle(held.popleft())
            if self._held is not None:  # that one went to the worker too: the rest waits
                self._held.extend(held)
                return


class _Waiter:
    """One request's reply, handed from the loop to the thread waiting for it."""

    __slots__ = ("_lock", "reply")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # released once the reply (or its absence) is known
        self.reply: bytes | None = None

    def answer(self, reply: bytes | None) -> None:
        """Once, on the loop: the reply, or ``None`` (no responders, not sent)."""
        self.reply = reply
        self._lock.release()

    def wait(self, timeout_s: float) -> bytes | None:
        """The reply; ``None`` for a timeout, no responders, a lost connection."""
        return self.reply if self._lock.acquire(timeout=timeout_s) else None


def _logged(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except Exception:
        log.exception("replication: handling a message failed")
        return None
