"""The request lifecycle's own defects (issue 9): use after close, per-request cookie state,
serialized access after a failover."""

from __future__ import annotations

import pytest

import sessionkeeper as sk

from .conftest import MakeManager, RecordingStore, new_session


def token(sid: str) -> str:
    return sid.split(".")[0]


# -- defect 11: use after close ----------------------------------------------------------------


def test_a_closed_manager_refuses_new_requests_with_a_clear_error(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make()
    sid = new_session(m, n=1)
    m.close()
    with pytest.raises(sk.ManagerClosed) as raised:
        m.lifecycle.begin_request("shop", sid)
    assert raised.value.code == "manager_closed"
    with pytest.raises(sk.ManagerClosed), m.request(app="shop", session_id=sid):
        pass  # pragma: no cover - refused before the block runs
    with pytest.raises(sk.ManagerClosed):
        m.lifecycle.begin_cached("shop", sid)
    assert issubclass(sk.ManagerClosed, sk.errors.UNAVAILABLE_ERRORS)  # adapters answer 503


def test_a_request_finishing_after_close_writes_nothing_and_keeps_its_change(
    make: MakeManager, store: RecordingStore, caplog: pytest.LogCaptureFixture
) -> None:
    m = make()
    sid = new_session(m, n=1)
    active = m.lifecycle.begin_request("shop", sid)
    m.close()
    saves = len(store.saves)
    active.session["n"] = 2
    m.lifecycle.end_request(active, ok=True)
    m.housekeep()
    m.flush()
    assert len(store.saves) == saves  # nothing through the closed store
    assert store.raw("shop", token(sid)).attributes["n"] == b"1"  # type: ignore[union-attr]
    assert m.stats()["dirty"] == 1
    assert token(sid)[:8] in caplog.text
