"""The shared rules around a write refused by its deadline fence (``fence.unfenced`` under
``Store._call``), without a server: a MemoryStore whose backend answers ``FENCED``, unapplied,
for the tokens it is told to, as a server that began those writes too late does. A fenced
write is sent again, alone; one the backend answered is never sent twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from sessionkeeper.errors import StoreUnavailable
from sessionkeeper.stores import MemoryStore, RetryPolicy, SaveRequest, SaveResult, SaveStatus

from .contract import req, tok


class LateServer(MemoryStore):
    """Refuses, unapplied, the next ``fences[token]`` writes of each token named."""

    def __init__(self, fences: dict[str, int], attempts: int = 3) -> None:
        super().__init__(retry=RetryPolicy(attempts=attempts, backoff_s=0), sleep=lambda _: None)
        self.fences = fences
        self.sent: list[list[str]] = []  # the tokens of each backend call

    def _save_batch(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        self.sent.append([r.token for r in requests])
        out: list[SaveResult] = []
        for r in requests:
            if self.fences.get(r.token, 0) > 0:
                self.fences[r.token] -= 1
                out.append(SaveResult(SaveStatus.FENCED))
            else:
                out.append(super()._save_batch([r])[0])
        return out


def test_no_fence_one_send() -> None:
    store = LateServer({})
    results = store.save_many([req(tok(1)), req(tok(2))])
    assert [r.status for r in results] == [SaveStatus.SAVED] * 2
    assert store.sent == [[tok(1), tok(2)]]
    assert store.stats.writes_fenced == 0


def test_a_fenced_write_is_sent_again_alone() -> None:
    store = LateServer({tok(2): 1})
    results = store.save_many([req(tok(1)), req(tok(2)), req(tok(3))])
    assert [(r.status, r.version) for r in results] == [(SaveStatus.SAVED, 1)] * 3
    assert store.sent == [[tok(1), tok(2), tok(3)], [tok(2)]]
    assert store.stats.writes_fenced == 1 and store.stats.retries == 0


def test_fenced_twice_is_retried_without_sending_the_answered_again() -> None:
    store = LateServer({tok(2): 3})
    results = store.save_many([req(tok(1)), req(tok(2))])
    assert [(r.status, r.version) for r in results] == [(SaveStatus.SAVED, 1)] * 2
    # Attempt 1: both, then tok(2) again (fenced twice: Fenced, retried); attempt 2: tok(2),
    # fenced a third time, then again at once, answered.
    assert store.sent == [[tok(1), tok(2)], [tok(2)], [tok(2)], [tok(2)]]
    assert store.stats.writes_fenced == 3 and store.stats.retries == 1
    stored = store.load("shop", tok(1))
    assert stored is not None and stored.version == 1  # written once


def test_fenced_on_every_attempt_is_an_outage() -> None:
    store = LateServer({tok(1): 100}, attempts=2)
    with pytest.raises(StoreUnavailable):
        store.save_many([req(tok(1)), req(tok(2))])
    assert store.sent == [[tok(1), tok(2)], [tok(1)], [tok(1)], [tok(1)]]
    assert store.load("shop", tok(1)) is None
    stored = store.load("shop", tok(2))
    assert stored is not None and stored.version == 1


class Miscounting(MemoryStore):
    def _save_batch(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        return super()._save_batch(requests)[:-1]


def test_a_backend_answering_too_few_results_is_an_error() -> None:
    with pytest.raises(Exception, match="results for 2 requests"):
        Miscounting().save_many([req(tok(1)), req(tok(2))])
