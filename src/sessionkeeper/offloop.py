"""Keeping store I/O off an async adapter's event loop.

An async adapter (``sessionkeeper.asgi``) calls ``Lifecycle.mark_event_loop`` on the loop before
the application runs: for that request's context, :func:`on_event_loop` then tells the thread of
the loop from the worker threads the adapter runs blocking calls in (they inherit the context,
not the thread), and the adapter's way of running a blocking call in a worker thread is known.

What a session operation does on the loop:

- a set or delete that the policy writes inline (``OnAttribute``, ``AfterUpdates``) is left to
  the write at the end of the request (``host``);
- ``sync()``, ``invalidate()`` and ``rotate_id()`` do their in-memory part at once (the id
  changes, the session empties) and :func:`defer` their store work to the request's hold
  (``ActiveRequest.deferred``), which the adapter runs in a worker thread before the response
  starts (or, for a websocket, before its next message): the response the client sees still
  follows the store work, and a store that fails it makes that response a 503;
- the awaitable forms (``await session.async_sync()``, ``ainvalidate()``, ``arotate_id()``)
  run the whole operation in a worker thread (:func:`run`), so the endpoint sees its errors.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

#: ``fn -> awaitable of fn()``, run in a worker thread (the ASGI adapter's threads).
RunInThread = Callable[[Callable[[], Any]], Awaitable[Any]]

#: The thread of the event loop serving this context's request, if an async adapter said so, and
#: how that adapter runs a blocking call in a worker thread.
_event_loop: ContextVar[tuple[int, RunInThread | None] | None] = ContextVar(
    "sessionkeeper_event_loop", default=None
)
#: The store work deferred by the request of this context (its hold's list).
_deferred: ContextVar[list[Callable[[], None]] | None] = ContextVar(
    "sessionkeeper_deferred", default=None
)


def mark(run_in_thread: RunInThread | None = None) -> None:
    """The calling thread runs the event loop of this context's request."""
    _event_loop.set((threading.get_ident(), run_in_thread))


def on_event_loop() -> bool:
    """Whether the caller runs on the event loop of an async adapter's request (where no store
    call may run)."""
    marked = _event_loop.get()
    return marked is not None and marked[0] == threading.get_ident()


def hold(deferred: list[Callable[[], None]]) -> None:
    """Make ``deferred`` (a request hold's list) where this context's operations defer to."""
    _deferred.set(deferred)


def defer(step: Callable[[], None]) -> bool:
    """On the loop, add ``step`` to the request's deferred store work and answer ``True``;
    elsewhere (or outside a request) answer ``False``: the caller does it now."""
    deferred = _deferred.get()
    if deferred is None or not on_event_loop():
        return False
    deferred.append(step)
    return True


def take(deferred: list[Callable[[], None]]) -> Callable[[], None] | None:
    """The deferred steps of a hold, as one call (to run in a worker thread), emptied; ``None``
    when there are none."""
    if not deferred:
        return None
    steps = list(deferred)
    deferred.clear()

    def run_steps() -> None:
        for step in steps:
            step()

    return run_steps


async def run(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a worker thread: the adapter's when it marked this context, else the running
    loop's default executor (in a copy of this context)."""
    marked = _event_loop.get()
    if marked is not None and marked[1] is not None:
        return await marked[1](fn)
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(None, context.run, fn)
