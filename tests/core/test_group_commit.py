"""Group commit (issue 11): request-end writes that overlap share one store batch, and each
request returns only once its own write is in the store."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import sessionkeeper as sk
from sessionkeeper.stores import SaveRequest, SaveResult

from .conftest import MakeManager, RecordingStore, new_session

WAIT_S = 10  # a bound on every wait, so a broken group commit fails instead of hanging
N = 6


class GatedStore(RecordingStore):
    """A RecordingStore whose next save waits, once ``gate()`` was called, until ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []  # sessions per save_many
        self._gated = False

    def gate(self) -> None:
        self._gated = True

    def _save_batch(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        self.batches.append(len(requests))
        if self._gated:
            self._gated = False
            self.entered.set()
            assert self.release.wait(WAIT_S)
        return super()._save_batch(requests)


def _wait_queued(m: sk.SessionManager, n: int) -> None:
    assert m._rt.group.wait_queued(n, WAIT_S), f"{m._rt.group.queued} writes queued, not {n}"


def _overlapping_requests(
    m: sk.SessionManager, store: GatedStore, sids: list[str]
) -> dict[int, bytes | None]:
    """Request ``i`` sets ``n = i + 1`` on session ``i``; request 0's write is held in the store
    until the others are queued behind it. Each thread reads the store right after its request
    returned: what it read, per request."""
    seen: dict[int, bytes | None] = {}

    def request(i: int) -> None:
        with m.request("shop", sids[i]) as s:
            s["n"] = i + 1
        stored = store.raw("shop", sids[i].split(".")[0])
        seen[i] = stored.attributes.get("n") if stored is not None else None

    store.gate()
    first = threading.Thread(target=request, args=(0,))
    first.start()
    assert store.entered.wait(WAIT_S)
    others = [threading.Thread(target=request, args=(i,)) for i in range(1, N)]
    for t in others:
        t.start()
    _wait_queued(m, N - 1)
    store.release.set()
    for t in [first, *others]:
        t.join(WAIT_S)
        assert not t.is_alive()
    return seen


def test_overlapping_request_ends_share_one_batch(make: MakeManager) -> None:
    store = GatedStore()
    m = make(store=store, write=sk.EndOfRequest())
    sids = [new_session(m, n=0) for _ in range(N)]
    store.batches.clear()
    seen = _overlapping_requests(m, store, sids)
    # The held write alone, then everything that queued behind it in one batch.
    assert store.batches == [1, N - 1]
    # Every request's write was in the store when its request returned.
    assert seen == {i: str(i + 1).encode() for i in range(N)}
    assert m._rt.group.batches >= 2


def test_a_failed_batch_keeps_each_session_dirty(make: MakeManager) -> None:
    store = GatedStore()
    m = make(store=store, write=sk.EndOfRequest(), on_write_failure="defer")
    sids = [new_session(m, n=0) for _ in range(N)]
    store.gate()
    done: list[int] = []

    def request(i: int) -> None:
        with m.request("shop", sids[i]) as s:
            s["n"] = i + 1
        done.append(i)

    _fail_the_held_and_the_grouped_batch(m, store, request)
    assert sorted(done) == list(range(N))  # a failed write does not fail the request
    store.down = False
    assert m.flush() == N  # every change was kept, and is written now
    for i, sid in enumerate(sids):
        stored = store.raw("shop", sid.split(".")[0])
        assert stored is not None and stored.attributes["n"] == str(i + 1).encode()


def test_a_failed_batch_refuses_each_request_under_refuse(make: MakeManager) -> None:
    """EndOfRequest's default (``on_write_failure="refuse"``): every request of a grouped batch
    that failed is refused (503) and rolled back, the first one's included."""
    store = GatedStore()
    m = make(store=store, write=sk.EndOfRequest())
    sids = [new_session(m, n=0) for _ in range(N)]
    store.gate()
    refused: list[int] = []

    def request(i: int) -> None:
        try:
            with m.request("shop", sids[i]) as s:
                s["n"] = i + 1
        except sk.WriteRefused:
            refused.append(i)

    _fail_the_held_and_the_grouped_batch(m, store, request)
    assert sorted(refused) == list(range(N))
    store.down = False
    assert m.flush() == 0  # rolled back: nothing left to write
    for sid in sids:
        with m.request("shop", sid) as s:
            assert s["n"] == 0


def _fail_the_held_and_the_grouped_batch(
    m: sk.SessionManager, store: GatedStore, request: Callable[[int], None]
) -> None:
    """Request 0's write is held in the store while the others queue behind it; then the store
    goes down, so the held write and the grouped batch both fail; every request has ended."""
    first = threading.Thread(target=request, args=(0,))
    first.start()
    assert store.entered.wait(WAIT_S)
    others = [threading.Thread(target=request, args=(i,)) for i in range(1, N)]
    for t in others:
        t.start()
    _wait_queued(m, N - 1)
    store.down = True
    store.release.set()
    for t in [first, *others]:
        t.join(WAIT_S)
        assert not t.is_alive()
