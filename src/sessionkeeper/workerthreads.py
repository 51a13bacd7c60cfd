"""``WorkerThreads``: the ASGI adapter's blocking calls, run in worker threads of its own.

What ``anyio.to_thread.run_sync`` does for the adapter (a call in a worker thread, awaited on the
event loop), with the same contract and less work per call on asyncio: a job goes to the threads
through one queue and comes back as one ``call_soon_threadsafe``, with no capacity limiter, cancel
scope or ``concurrent.futures`` future between them. The adapter makes one such call per request
that writes, so the hand-off is on the path of every changed request.

The contract, as anyio's (without ``abandon_on_cancel``):

- the call runs in a copy of the caller's context (its context variables, as a task's);
- its exception is raised in the caller;
- a cancellation of the awaiting task is never an abandonment: the task sees its
  ``CancelledError`` only once the call returned. The call may be a request's write, whose end
  the caller must not reach while the write still runs.

Threads: at most ``max_threads`` run at once (a call beyond that waits for one to be free); they
are started when a call finds none idle and end after ``idle_s`` without work. Any thread may
submit, each call to the event loop it was awaited on. A forked child starts with none (the
parent's are not its own). Only asyncio has the loop this needs: under another event loop (trio)
the adapter uses anyio's threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from . import forks

T = TypeVar("T")


class _Outcome(asyncio.Future[Any]):
    """A call's outcome, which its awaiting task cannot cancel: ``Task.cancel()`` then marks the
    task instead, which raises ``CancelledError`` when this future is done, that is once the call
    returned. (anyio's cancel scopes, which cancel a task again on every loop iteration until it
    leaves the scope, see the mark and wait too.)"""

    def cancel(self, msg: Any = None) -> bool:
        return False


class _Job:
    __slots__ = ("context", "fn", "loop", "outcome")

    def __init__(self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self.loop = loop
        self.outcome = _Outcome(loop=loop)
        self.context = contextvars.copy_context()

    def call(self) -> tuple[Callable[[Any], None], Any]:
        """In a worker thread: make the call; how to answer it."""
        try:
            return self.outcome.set_result, self.context.run(self.fn)
        except BaseException as exc:  # the caller's to handle, whatever it is
            return self.outcome.set_exception, exc

    def answer(self, setter: Callable[[Any], None], value: Any) -> None:
        # RuntimeError: the loop was closed meanwhile, and nobody awaits the call any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(setter, value)


class WorkerThreads:
    def __init__(self, max_threads: int, *, name: str, idle_s: float = 10.0) -> None:
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, not {max_threads}")
        self.max_threads = max_threads
        self.name = name
        self.idle_s = idle_s
        self._reset()
        forks.at_fork_in_child(self, WorkerThreads._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.threads = 0  # alive
        self._idle = 0  # waiting for a job that no submitted job is promised to yet
        self._backlog = 0  # submitted jobs that wait for a thread to be free

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a worker thread; its result, or its exception raised here."""
        job = _Job(fn, asyncio.get_running_loop())
        self._submit(job)
        result: T = await job.outcome
        return result

    def _submit(self, job: _Job) -> None:
        start = False
        with self._lock:
            if self._idle:
                self._idle -= 1  # that thread's next job is this one
            elif self.threads < self.max_threads:
                self.threads += 1
                start = True
            else:
                self._backlog += 1
        if start:  # before the job is queued: a thread that cannot start fails this call only
            try:
                threading.Thread(target=self._work, name=self.name, daemon=True).start()
            except BaseException:
                with self._lock:
                    self.threads -= 1
                raise
        self._jobs.put(job)

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            try:
                job = jobs.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    if self._idle:  # no job is on its way to this thread: it may end
                        self._idle -= 1
                        self.threads -= 1
                        return
                continue  # a job was promised to an idle thread, this one included
            setter, value = job.call()
            # Idle before the caller hears back: its next call (the next request's) finds this
            # thread instead of starting another.
            with self._lock:
                if self._backlog:
                    self._backlog -= 1  # it takes a job that waited for a free thread
                else:
                    self._idle += 1
            job.answer(setter, value)
            del job, setter, value  # the outcome may be large; the next job may be far off
