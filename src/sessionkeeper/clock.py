"""Every clock read goes through a :class:`Clock`, so tests move time instead of sleeping.

Intervals (a policy's ``interval_s``, the sweep's schedule, a store's outage backoff) are measured
on ``monotonic()``, which a step of the wall clock does not move; timestamps that are stored or
compared across nodes (access times, expiry) are on ``time()``."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Wall time in seconds since the epoch (what is stored) and a monotonic reading."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that only moves when told to. Thread safe."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += seconds
            self._mono += seconds

    def step_wall(self, seconds: float) -> None:
        """Move the wall clock alone, either way (NTP stepping it, an operator setting it); the
        monotonic reading does not move, as a real monotonic clock would not."""
        with self._lock:
            self._now += seconds
