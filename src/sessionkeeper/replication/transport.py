"""``Transport``: a nats-py client on one background event-loop thread.

The loop thread is started lazily, by the first :meth:`start` in the process that uses it; a
forked child starts its own (:mod:`..forks`): the parent's thread and socket are not the child's.
Other threads call :meth:`publish` and :meth:`request`, which hand the work to the loop and wait
for it at most their bound. Incoming messages are handled by ``handler(subject, data)`` on the
loop, in arrival order (so one owner's deltas apply in the order sent); it must not block. Its
return value, if bytes, is the reply; if a callable, that runs on one worker thread (work that
may itself send a request, or wait), and what it returns is the reply.

While NATS is unreachable the client reconnects forever in the background: ``connected`` is
false, ``publish`` drops (counted by the caller), ``request`` answers ``None`` at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .. import forks

log = logging.getLogger("sessionkeeper.replication")

Reply = bytes | None
Handler = Callable[[str, bytes], "Reply | Callable[[], Reply]"]


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
        self._up_event = threading.Event()

    # -- lifetime -------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._loop is not None or self._closing:
                return
            loop = asyncio.new_event_loop()
            self._worker = concurrent.futures.ThreadPoolExecutor(1, "sessionkeeper-repl")
            self._loop = loop
            self.down_since = time.monotonic()
        threading.Thread(target=loop.run_forever, name="sessionkeeper-nats", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start_run(), loop)

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait, at most ``timeout_s``, for the connection (a process's first request may
        need the cluster before the background connect is done)."""
        return self._up_event.wait(timeout_s)

    def close(self, *, graceful: bool = True, timeout_s: float = 2.0) -> None:
        """Stop. ``graceful`` drains what was sent; otherwise the socket is dropped at once, as a
        crash would (tests use it so)."""
        with self._lock:
            loop, closing = self._loop, self._closing
            self._closing = True
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
        self.down_since = None  # closed: no gap to report

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
                    connect_timeout=1,
                    disconnected_cb=self._down,
                    reconnected_cb=self._up,
                    error_cb=self._error,
                    **self._options,
                )
            except Exception as exc:
                log.warning("NATS at %s unreachable (%s): retrying", self._url, exc)
                await asyncio.sleep(wait_s)
                wait_s = min(wait_s * 2, 2.0)
        if self._nc is None:
            return
        for subject in self._subjects():
            await self._nc.subscribe(subject, cb=self._deliver)
        await self._up()
        while not self._closing:
            self._submit(self._tick)
            await asyncio.sleep(self._tick_s)

    async def _up(self) -> None:
        self.connected = True
        self.down_since = None
        self._up_event.set()
        self._submit(lambda: self._on_state(True))

    async def _down(self) -> None:
        self.connected = False
        self.down_since = None if self._closing else time.monotonic()
        self._up_event.clear()
        self._submit(lambda: self._on_state(False))

    async def _error(self, exc: Exception) -> None:
        log.debug("NATS: %s", exc)

    def _submit(self, fn: Callable[[], object]) -> concurrent.futures.Future[object] | None:
        worker = self._worker
        if worker is None or self._closing:
            return None
        try:
            return worker.submit(_logged, fn)
        except RuntimeError:  # shut down meanwhile
            return None

    async def _deliver(self, msg: Any) -> None:
        result = _logged(lambda: self._handler(msg.subject, msg.data))
        if callable(result):
            fut = self._submit(result)
            if fut is None:
                return
            result = await asyncio.wrap_future(fut, loop=asyncio.get_running_loop())
        reply = result
        if msg.reply and isinstance(reply, bytes) and self._nc is not None and self.connected:
            try:
                await self._nc.publish(msg.reply, reply)
            except Exception:
                log.debug("a reply could not be sent", exc_info=True)

    # -- sending ----------------------------------------------------------------------------------

    def publish(self, subject: str, data: bytes) -> bool:
        """Queue ``data`` on ``subject``; whether it was handed to the client."""
        loop, nc = self._loop, self._nc
        if loop is None or nc is None or not self.connected:
            return False
        asyncio.run_coroutine_threadsafe(nc.publish(subject, data), loop)
        return True

    def request(self, subject: str, data: bytes, timeout_s: float) -> bytes | None:
        """Send and wait at most ``timeout_s`` for the reply; ``None`` when none came (timeout,
        no subscriber, not connected). Must not be called on the worker's own handling of a
        message addressed to this same node (it would wait for itself).

        The hop to the loop is one ``call_soon_threadsafe``, and the reply comes back through a
        :class:`_Waiter` (a lock the calling thread blocks on), set by the request task's done
        callback: no ``run_coroutine_threadsafe`` wrapper task and future chain on the path
        every ``ack="sync"`` request waits on."""
        loop, nc = self._loop, self._nc
        if loop is None or nc is None or not self.connected:
            return None
        waiter = _Waiter()

        def start() -> None:
            waiter.task = loop.create_task(nc.request(subject, data, timeout=timeout_s))
            waiter.task.add_done_callback(waiter.done)

        try:
            loop.call_soon_threadsafe(start)
        except RuntimeError:  # the loop was closed meanwhile
            return None
        reply = waiter.wait(timeout_s + 0.5)
        if reply is None and waiter.task is not None and not waiter.task.done():
            loop.call_soon_threadsafe(waiter.task.cancel)
        return reply


class _Waiter:
    """One request's reply, handed from the loop to the thread waiting for it."""

    __slots__ = ("_lock", "reply", "task")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # released once the reply (or its absence) is known
        self.reply: bytes | None = None
        self.task: asyncio.Task[Any] | None = None

    def done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.reply = bytes(task.result().data)
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
