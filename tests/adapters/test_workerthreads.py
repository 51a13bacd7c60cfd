"""``WorkerThreads``: the ASGI adapter's calls in worker threads, with anyio's contract."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import select
import signal
import sys
import threading

import anyio
import pytest

from sessionkeeper.workerthreads import WorkerThreads

#: A bound on waits for threads that must end (never reached when the code is right).
WAIT_S = 10.0

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def test_a_call_returns_its_result_from_another_thread_in_the_callers_context() -> None:
    pool = WorkerThreads(2, name="wt-result")

    def call() -> tuple[int, str]:
        seen = var.get()
        var.set("set in the thread")  # in a copy: never seen by the caller
        return threading.get_ident(), seen

    async def main() -> tuple[int, str, str]:
        var.set("the caller's")
        thread, seen = await pool.run(call)
        return thread, seen, var.get()

    thread, seen, after = asyncio.run(main())
    assert thread != threading.get_ident()
    assert (seen, after) == ("the caller's", "the caller's")


def test_a_call_raises_its_exception_in_the_caller() -> None:
    pool = WorkerThreads(2, name="wt-raise")

    def fail() -> None:
        raise KeyError("from the thread")

    with pytest.raises(KeyError, match="from the thread"):
        asyncio.run(pool.run(fail))


def _cancel_while_running(pool: WorkerThreads, cancel_by_scope: bool) -> list[str]:
    """Cancel a task while its call runs; the order in which the call and the task ended."""
    events: list[str] = []
    started, release = threading.Event(), threading.Event()

    def call() -> None:
        started.set()
        release.wait(WAIT_S)
        events.append("call returned")

    async def main() -> None:
        async def waiter(scope: anyio.CancelScope | None) -> None:
            try:
                if scope is None:
                    await pool.run(call)
                else:
                    with scope:
                        await pool.run(call)
                    events.append("scope left")
                    return
            except asyncio.CancelledError:
                events.append("task cancelled")
                raise

        scope = anyio.CancelScope() if cancel_by_scope else None
        task = asyncio.ensure_future(waiter(scope))
        await asyncio.to_thread(started.wait, WAIT_S)
        if scope is not None:
            scope.cancel()
        else:
            task.cancel()
        for _ in range(20):  # many loop iterations: anyio cancels again on each
            await asyncio.sleep(0)
        events.append("released")
        release.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return events


@pytest.mark.parametrize("cancel_by_scope", [False, True], ids=["task.cancel", "anyio-scope"])
def test_a_cancelled_caller_waits_for_its_call_to_return(cancel_by_scope: bool) -> None:
    """A request's write is never abandoned: its task ends only after the write returned."""
    pool = WorkerThreads(2, name="wt-cancel")
    events = _cancel_while_running(pool, cancel_by_scope)
    ended = "scope left" if cancel_by_scope else "task cancelled"
    assert events == ["released", "call returned", ended]


def test_threads_are_reused_and_bounded() -> None:
    pool = WorkerThreads(2, name="wt-bound")
    running, most = 0, 0
    lock = threading.Lock()
    gate = threading.Barrier(2, timeout=WAIT_S)  # two calls at once, never a third

    def call() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        try:
            gate.wait()
        finally:
            with lock:
                running -= 1

    async def main() -> None:
        for _ in range(3):
            await pool.run(lambda: None)  # one after the other: one thread
        assert pool.threads == 1
        await asyncio.gather(*(pool.run(call) for _ in range(6)))

    asyncio.run(main())
    assert most == 2 and pool.threads == 2


def test_an_idle_thread_ends() -> None:
    pool = WorkerThreads(4, name="wt-idle", idle_s=0.0)
    asyncio.run(pool.run(lambda: None))
    for thread in threading.enumerate():
        if thread.name == "wt-idle":
            thread.join(WAIT_S)
    assert pool.threads == 0
    assert asyncio.run(pool.run(lambda: 7)) == 7  # a later call starts one again


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_its_own_threads() -> None:
    """The parent's idle thread is not the child's: a call in the child must not wait for it."""
    pool = WorkerThreads(1, name="wt-fork", idle_s=WAIT_S)
    asyncio.run(pool.run(lambda: None))  # the parent now has one idle thread
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never run pytest's teardown
        try:
            os.write(write, str(asyncio.run(pool.run(lambda: 42))).encode())
        finally:
            sys.stdout.flush()
            os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], WAIT_S)
    report = os.read(read, 100).decode() if ready else "no answer"
    os.close(read)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert report == "42"


def test_a_thread_that_cannot_start_fails_only_its_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its job is never queued: no later thread runs a call whose caller saw it fail."""
    pool = WorkerThreads(1, name="wt-start")
    ran: list[str] = []
    start = threading.Thread.start

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError, match="can't start"):
        asyncio.run(pool.run(lambda: ran.append("refused")))
    monkeypatch.setattr(threading.Thread, "start", start)
    assert pool.threads == 0
    asyncio.run(pool.run(lambda: ran.append("later")))
    assert ran == ["later"]
