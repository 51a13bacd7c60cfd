"""The deadline fence of a one-round-trip write: the moment, in the server's clock, after which
the client no longer waits for the write's answer. The server refuses (no effect at all, a
distinct answer: ``SaveStatus.FENCED``) a write it begins after that moment.

Why: a write that travels as one round trip (PostgreSQL's one statement in autocommit, MariaDB's
multi-statement text ending in ``COMMIT``, Redis's one script) is in the server's socket buffer
once sent. A frozen or hung server carries it out when it resumes, long after the client timed
out, answered 503 and rolled the change back in its copy. With the fence, the late write does
nothing: "timed out" means "not applied" whenever the server began the write late. A write of
several statements (MariaDB's text, PostgreSQL's batch of several sessions) tests its fence
again as its last statement before the ``COMMIT``, and one past it there commits nothing: a
server stopped between the statements and the ``COMMIT`` (frozen, or waiting for a lock) does
not commit late. (A server that stops inside PostgreSQL's one statement, or inside the
``COMMIT``, after it began in time may still finish it: that window is the statement's, or the
commit's, own duration, not the length of the outage.)

The fence is ``now + margin_s`` on the client, turned into the server's clock by an offset the
store measures with one round trip (the server's time against the midpoint of the client's
send and receive): on the first write, again :data:`MAX_AGE_S` later, and again after any write
refused by its fence. A refused write is known not applied, so the store runs it again at once
with the new offset: a server clock that stepped forward costs one round trip, never a write. A
server clock that stepped back makes fences later than meant (weaker, never wrong) until the
next measurement.

Thread safety: the offset and the time it was measured are one tuple, replaced in one step;
two threads measuring at once both get a valid offset.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .records import FENCED, SaveRequest, SaveResult

#: How long a measured offset is trusted before the next write measures it again.
MAX_AGE_S = 60.0
#: The share of the store's ``timeout_s`` the server has to begin a write: well inside the
#: client's own wait, so a write the server begins in time is answered before the client gives
#: up, unless the write itself takes the rest.
MARGIN_SHARE = 0.5


class ServerClock:
    """The offset of one server's clock from this process's monotonic clock.

    ``monotonic`` is the client's clock (a fake one in tests); the server's time comes from the
    probe each backend passes to :meth:`fence`, run on the connection the write will use."""

    def __init__(
        self,
        margin_s: float,
        *,
        max_age_s: float = MAX_AGE_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.margin_s = margin_s
        self.max_age_s = max_age_s
        self._monotonic = monotonic
        #: (offset_s, measured_at) or ``None`` until measured; server time = monotonic + offset.
        self._offset: tuple[float, float] | None = None
        #: How many times the offset was measured (tests and stats read it).
        self.measurements = 0

    def fence(self, probe: Callable[[], float]) -> float:
        """The server-clock time (epoch seconds) after which a write sent now must not begin.
        Measures the offset first (``probe()``: the server's epoch time, one round trip) when
        there is none, or it is older than ``max_age_s``."""
        now = self._monotonic()
        known = self._offset
        if known is None or now - known[1] > self.max_age_s:
            known = self.measure(probe)
            now = self._monotonic()
        return now + known[0] + self.margin_s

    def measure(self, probe: Callable[[], float]) -> tuple[float, float]:
        before = self._monotonic()
        server = probe()
        after = self._monotonic()
        self._offset = known = (server - (before + after) / 2, after)
        self.measurements += 1
        return known

    def forget(self) -> None:
        """After a write refused by its fence: the next write measures the offset again."""
        self._offset = None


class Fenced(Exception):
    """A write the server refused by its fence twice in a row, the second time just after
    measuring its clock again (a server too slow to begin it within the margin): transient,
    retried with backoff by the store's shared rules (``Store._call``)."""


def unfenced(
    save: Callable[[Sequence[SaveRequest]], list[SaveResult]],
    requests: Sequence[SaveRequest],
    refused: Callable[[int], None],
) -> Callable[[], list[SaveResult]]:
    """One attempt of writing ``requests`` with ``save`` (a backend's ``_save_batch``), to run
    under the store's retries. A write answered ``FENCED`` is known not applied: after
    ``refused(count)`` (the store measures the server's clock again on its next write) it is
    sent again at once; refused again, the attempt raises :class:`Fenced`. Results are kept
    across attempts: a retry sends only the writes whose result is not known yet, never again
    one the server already wrote. The first send, of the whole batch, answered without a fence
    (every write but the rare refused one) is returned as the backend gave it."""
    #: Per request, its answer once known; ``None`` until a send was answered ``FENCED``.
    results: list[SaveResult | None] | None = None

    def send(known: list[SaveResult | None]) -> bool:
        todo = [i for i, r in enumerate(known) if r is None]
        got = save([requests[i] for i in todo])
        if len(got) != len(todo):
            raise _miscount(len(got), len(todo))
        fenced = 0
        for i, res in zip(todo, got, strict=True):
            if res.status is FENCED:
                fenced += 1
            else:
                known[i] = res
        if fenced:
            refused(fenced)
        return fenced > 0

    def attempt() -> list[SaveResult]:
        nonlocal results
        if results is None:
            got = save(requests)
            if len(got) != len(requests):
                raise _miscount(len(got), len(requests))
            fenced = 0
            for res in got:
                if res.status is FENCED:
                    fenced += 1
            if not fenced:
                return got
            results = [None if r.status is FENCED else r for r in got]
            refused(fenced)
            if send(results):  # sent again at once, after the store measured its clock again
                raise Fenced("the server began the write after its deadline fence")
        elif send(results) and send(results):
            raise Fenced("the server began the write after its deadline fence")
        return [r for r in results if r is not None]

    return attempt


def _miscount(got: int, sent: int) -> ValueError:
    return ValueError(f"save returned {got} results for {sent} requests")
