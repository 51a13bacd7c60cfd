"""The housekeeping thread: one per manager, per process. It only schedules: every ``poll_s`` it
asks the manager to flush what is due and, every ``sweep_interval_s`` (within the allowed hours), to
sweep. Started lazily by the first request in a process, so a manager built before a fork (gunicorn
``--preload``) gets its own thread in every worker."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

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
        self._pid: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._pid == os.getpid() and self._thread.is_alive()

    def ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            # After a fork the parent's thread does not exist here: start our own.
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, name=f"sessionkeeper-{self._name}", daemon=True
            )
            self._pid = os.getpid()
            self._thread.start()

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
            pid, self._pid = self._pid, None
        if thread is not None and pid == os.getpid() and thread is not threading.current_thread():
            thread.join(timeout_s)
