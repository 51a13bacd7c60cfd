"""One session's failure never costs another its write (issue 9, defects 1, 2, 4 and 14): a batch
that meets an error about one session writes the others; the failing one stays dirty, is counted
and logged, and is written once the store takes it. Outages stay outages."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import pytest

import sessionkeeper as sk
from sessionkeeper.logs import session_hash
from sessionkeeper.stores import SaveRequest, SaveResult, Touch

from .conftest import MakeManager, RecordingStore, new_session


def token(sid: str) -> str:
    return sid.split(".")[0]


class RefusingStore(RecordingStore):
    """Raises ``refusal()`` from ``_save_batch`` for any batch holding a token in ``refused``,
    as a backend does for one row it cannot write."""

    def __init__(self, refusal: Callable[[], Exception]) -> None:
        super().__init__()
        self.refusal = refusal
        self.refused: set[str] = set()

    def _save_batch(self, requests: Sequence[SaveRequest]) -> list[SaveResult]:
        if any(r.token in self.refused for r in requests):
            self._hook("save")
            raise self.refusal()
        return super()._save_batch(requests)


REFUSALS = {
    "corrupt": lambda: sk.CorruptSessionData("stored row cannot be merged"),
    "store_error": lambda: sk.StoreError("value too large for this row"),
}


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_one_refused_session_does_not_cost_the_others_their_write(
    make: MakeManager, clock: sk.FakeClock, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    store = RefusingStore(REFUSALS[kind])
    m = make(store=store, write=sk.TimeBased(10))
    sids = [new_session(m, n=0) for _ in range(8)]
    m.flush()
    bad = token(sids[3])
    store.refused.add(bad)
    for sid in sids:
        with m.request(app="shop", session_id=sid) as s:
            s["n"] = 1
    clock.advance(11)
    with caplog.at_level(logging.WARNING, logger="sessionkeeper"):
        m.flush_due()  # raised before, and every session of the batch lost its change
    stored = {token(sid): store.raw("shop", token(sid)) for sid in sids}
    assert [t for t, st in stored.items() if st is None or st.attributes["n"] != b"1"] == [bad]
    stats = m.stats()
    assert stats["dirty"] == 1 and stats["write_refusals"] >= 1
    assert stats["writes_deferred"] == 0 and store.stats.available
    assert any(session_hash("shop", bad) in r.getMessage() for r in caplog.records)
    m.flush_due()  # still refused: still dirty, tried again
    assert m.stats()["dirty"] == 1
    store.refused.clear()
    m.flush_due()
    raw = store.raw("shop", bad)
    assert raw is not None and raw.attributes["n"] == b"1"
    assert m.stats()["dirty"] == 0


def test_close_writes_the_others_and_closes_the_store(make: MakeManager) -> None:
    store = RefusingStore(REFUSALS["corrupt"])
    closed: list[bool] = []
    store._close = lambda: closed.append(True)  # type: ignore[method-assign]
    m = make(store=store, write=sk.Manual(), save_on_create=False)
    sids = [new_session(m, n=5) for _ in range(4)]
    store.refused.add(token(sids[0]))
    left = m.close(deadline_s=0)
    assert left == [f"shop:{token(sids[0])}"]
    assert closed == [True]
    assert all(store.raw("shop", token(sid)) is not None for sid in sids[1:])


def test_an_outage_is_still_an_outage(make: MakeManager, store: RecordingStore) -> None:
    m = make(write=sk.TimeBased(10))
    sids = [new_session(m, n=0) for _ in range(4)]
    for sid in sids:
        with m.request(app="shop", session_id=sid) as s:
            s["n"] = 1
    store.down = True
    tries = store.calls.count("save")
    m.flush()
    stats = m.stats()
    assert stats["dirty"] == 4 and stats["write_failures"] == 4 and stats["write_refusals"] == 0
    assert store.calls.count("save") - tries == store.retry.attempts  # one batch, not split


@pytest.mark.parametrize("contents", ["all", "accessed"])
def test_a_value_mutated_into_an_unserializable_one_never_deletes_the_stored_key(
    make: MakeManager,
    store: RecordingStore,
    caplog: pytest.LogCaptureFixture,
    contents: str,
) -> None:
    """Issue 9, defect 2: with contents="all" the write was a full one without ``cart``, so
    the store lost the key while the log said it "is not written"."""
    m = make(contents=contents)
    sid = new_session(m, cart=[1], n=0)
    with (
        caplog.at_level(logging.ERROR, logger="sessionkeeper"),
        m.request(app="shop", session_id=sid) as s,
    ):
        s["cart"].append(object())
        s["n"] = 1
    raw = store.raw("shop", token(sid))
    assert raw is not None
    assert raw.attributes.get("cart") == b"[1]" and raw.attributes["n"] == b"1"
    stats = m.stats()
    assert stats["unserializable_values"] == 1 and stats["dirty"] == 1
    assert any("'cart'" in r.getMessage() for r in caplog.records)
    with m.request(app="shop", session_id=sid) as s:
        s["cart"].pop()  # serializable again: now it is written
        s["cart"].append(2)
    m.flush()
    raw = store.raw("shop", token(sid))
    assert raw is not None and raw.attributes["cart"] == b"[1,2]"
    assert m.stats()["dirty"] == 0


def test_a_failed_touch_is_counted_logged_and_kept_due(
    make: MakeManager,
    store: RecordingStore,
    clock: sk.FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 9, defect 4: a touch that failed inside a write was swallowed (no log, no count),
    so another node's sweep could end a session in use here."""
    m = make(contents="accessed")
    sid = new_session(m, cart=[1])
    clock.advance(60)
    store.down = True
    with (
        caplog.at_level(logging.WARNING, logger="sessionkeeper"),
        m.request(app="shop", session_id=sid) as s,
    ):
        s.get("cart")  # read, unchanged: the write at the end is a touch
    assert m.stats()["touch_failures"] == 1
    assert any(
        session_hash("shop", token(sid)) in r.getMessage() and "access time" in r.getMessage()
        for r in caplog.records
    )
    store.down = False
    m.flush_due()  # still due: its access time is older than save_period_s in the store
    raw = store.raw("shop", token(sid))
    assert raw is not None and raw.last_access_at == clock.time()


class CorruptTouchStore(RecordingStore):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def _touch_batch(self, touches: Sequence[Touch]) -> None:
        raise sk.CorruptSessionData("stored row cannot be read to raise its access time")

    def _close(self) -> None:
        self.closed = True


def test_close_and_housekeep_survive_corrupt_data_from_the_store(
    make: MakeManager, clock: sk.FakeClock
) -> None:
    """CorruptSessionData is not a StoreError: close() let it through before closing the
    store, and the housekeeping tick died on it."""
    store = CorruptTouchStore()
    m = make(store=store)
    sid = new_session(m)
    clock.advance(120)
    with m.request(app="shop", session_id=sid):
        pass  # nothing changed: only its access time is behind, for a touch
    m.housekeep()
    assert m.close(deadline_s=0) == []
    assert store.closed


@pytest.mark.parametrize(
    "value", ["x" * 101, ["x" * 101], b"\xff" * 120], ids=["str", "list", "bytes"]
)
def test_a_value_larger_than_the_store_takes_is_refused_when_set(
    make: MakeManager, store: RecordingStore, value: object
) -> None:
    """Issue 9, defect 14: where the store's limit is known, a value over it is refused at set
    time (naming the key), like any value that cannot be serialized, and nothing changes."""
    store.max_value_bytes = 100
    m = make(serializer="msgpack" if isinstance(value, bytes) else "json")
    sid = new_session(m, n=0)
    with m.request(app="shop", session_id=sid) as s:
        with pytest.raises(sk.SerializationError, match="'big'"):
            s["big"] = value
        assert "big" not in s and not s.has_changes()
        s["small"] = "x" * 90
    assert m.stats()["dirty"] == 0
