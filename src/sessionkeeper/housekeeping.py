"""The housekeeping thread: one per manager, per process. It only schedules: every ``poll_s`` it
asks the manager to flush what is due and, every ``sweep_interval_s`` (within the allowed hours), to
sweep. Started lazily by the first request in a process, so a manager built before a fork (gunicorn
``--preload``) gets its own thread in every worker: the fork forgets the parent's thread
(:mod:`.forks`), and the child's first request starts one of its own."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from . import forks

log = logging.getLogger("sessionkeeper.housekeeping")


def within_hours(hours: tuple[int, int] | None, epoch_s: float) -> bool:
    """Whether the local hour of ``epoch_s`` is in ``[start, end)``; wraps past midnight."""
    if hours is None:
        return True
    start, end = hours
    hour = time.localtime(epoch_s).tm_hour
    return start <= hour < end if start <= end else hour >= start or hour < end


class Housekeeper:
    def __init__(self, tick: Callable[[], None], poll_s: float, name: str) -> None:
        self._tick = tick
        self.poll_s = poll_s
        self._name = name
        self._after_fork()
        forks.at_fork_in_child(self, Housekeeper._after_fork)

    def _after_fork(self) -> None:
        """No thread yet (in a child: the parent's does not exist here), fresh locks."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None:
                return
            self._stop = threading.Event()
            thread = threading.Thread(
                target=self._run, name=f"sessionkeeper-{self._name}", daemon=True
            )
            thread.start()
            self._thread = thread

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self.poll_s):
            try:
                self._tick()
            except Exception:  # the thread must outlive any single failure
                log.exception("housekeeping tick failed")

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
