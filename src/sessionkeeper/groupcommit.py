"""Group commit: request-end writes of one manager that overlap share one store batch.

A request whose write finds no batch in flight and none queued writes at once, alone, in its own
thread: no added wait, no hand-off to another thread, no waiter built. Writes that arrive while a
batch is in flight queue up; when it ends, one of them (the first to wake) writes every queued
session in one ``Persistence.write``, that is one ``save_many`` (one transaction on SQL), and the
others are answered when that batch is done. So every caller returns only after the batch holding
its session was written (or failed: a failure is per session, as the writer always handles it,
and the session stays dirty). An exception other than the writer's handled store errors is raised
in every caller of that batch.

Threads: any number of callers; at most one batch in flight per manager. Only request ends go
through here (``Lifecycle``'s write after a request), called with no session lock held: the
batch's leader takes the locks of other callers' sessions, which they must not be holding.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from . import forks
from .session import Session


class _Waiter:
    __slots__ = ("done", "error", "session", "written")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.done = False
        self.written = False
        self.error: BaseException | None = None


class GroupCommit:
    """``write(session)``: write it now, sharing the batch with writes that overlap; whether it
    was written. ``write_batch`` writes a list of sessions at once and returns those written
    (``Persistence.write_sessions``, immediate)."""

    def __init__(self, write_batch: Callable[[list[Session]], list[Session]]) -> None:
        self._write_batch = write_batch
        #: The conditions' lock, taken bare where nothing waits or notifies inside (Condition's
        #: own ``with`` is two Python calls more).
        self._lock = lock = threading.Lock()
        self._cond = threading.Condition(lock)  # a batch ended
        self._enqueued = threading.Condition(lock)  # a write queued
        self._queue: list[_Waiter] = []
        self._busy = False  # a batch is being written
        self.batches = 0  # how many batches were written (tests and stats read it)
        forks.at_fork_in_child(self, GroupCommit._reset)

    def _reset(self) -> None:
        # A forked child has no writer threads: a batch its parent had in flight is not its own.
        self._lock = lock = threading.Lock()
        self._cond = threading.Condition(lock)  # a batch ended
        self._enqueued = threading.Condition(lock)  # a write queued
        self._queue, self._busy = [], False

    @property
    def queued(self) -> int:
        """Writes waiting for the batch in flight to end."""
        with self._cond:
            return len(self._queue)

    def wait_queued(self, n: int, timeout_s: float) -> bool:
        """Wait until ``n`` writes wait behind the batch in flight (tests make overlaps so)."""
        with self._cond:
            return self._enqueued.wait_for(lambda: len(self._queue) >= n, timeout_s)

    def write(self, session: Session) -> bool:
        with self._lock:
            alone = not self._busy and not self._queue  # nothing in flight, nobody waiting
            if alone:
                self._busy = True
        if alone:
            # The uncontended case, most requests': its own batch, written by its own thread,
            # with no waiter, no de-duplication and no set of ids to build.
            try:
                done = self._write_batch([session])  # of [session]: that one, or none
            finally:
                self._end([], set(), None)
            return bool(done)
        me = _Waiter(session)
        batch: list[_Waiter] = []
        with self._cond:
            self._queue.append(me)
            self._enqueued.notify_all()
            while self._busy and not me.done:
                self._cond.wait()
            if not me.done:  # the batch in flight ended: lead one of everything queued
                self._busy = True
                batch, self._queue = self._queue, []
        if batch:
            # One entry per session: two requests of one session that ended together.
            written, error = self._run(list({id(w.session): w.session for w in batch}.values()))
            self._end(batch, written, error)
        if me.error is not None:
            raise me.error
        return me.written

    def _run(self, sessions: list[Session]) -> tuple[set[int], BaseException | None]:
        """Write one batch: the ids of the sessions written, or the error it raised."""
        try:
            return {id(s) for s in self._write_batch(sessions)}, None
        except BaseException as exc:
            return set(), exc

    def _end(self, batch: list[_Waiter], written: set[int], error: BaseException | None) -> None:
        """A batch ended: answer its waiters; the next queued write may lead."""
        with self._lock:  # the lock of self._cond: notify_all below may be called under it
            for w in batch:
                w.done, w.error = True, error
                w.written = id(w.session) in written
            self._busy = False
            self.batches += 1
            if batch or self._queue:  # else no thread waits on this condition
                self._cond.notify_all()
