"""The cache: LRU bounded by cache_size, eviction writes first, overflow=False refuses."""

from __future__ import annotations

from typing import Any

import pytest

import sessionkeeper as sk

from .conftest import MakeManager, RecordingStore, new_session


def token(sid: str) -> str:
    return sid.split(".")[0]


def test_lru_bounded_by_cache_size(make: MakeManager, store: RecordingStore) -> None:
    m = make(cache_size=2)
    s1, s2 = new_session(m, n=1), new_session(m, n=2)
    with m.request(app="shop", session_id=s1):
        pass  # s1 is now the most recently used
    new_session(m, n=3)
    st = m.stats()
    assert st["live"] == 2 and st["evictions"] == 1
    loads = len(store.loads)
    with m.request(app="shop", session_id=s1) as s:
        assert s["n"] == 1
    assert len(store.loads) == loads  # still cached
    with m.request(app="shop", session_id=s2) as s:
        assert s["n"] == 2  # evicted, read back from the store
    assert len(store.loads) == loads + 1


class Passivating:
    calls: list[str] = []

    def session_will_passivate(self, session: sk.Session) -> None:
        Passivating.calls.append(session.token)


@pytest.fixture
def pickled(make: MakeManager) -> Any:
    return lambda **kw: make(serializer="pickle", pickle_key=b"k" * 32, **kw)


def test_eviction_writes_a_dirty_session_first_and_passivates(
    pickled: Any, store: RecordingStore
) -> None:
    Passivating.calls = []
    m = pickled(cache_size=1, write=sk.Manual())
    first = new_session(m, n=0)
    with m.request(app="shop", session_id=first) as s:
        s["n"] = 5
        s["obj"] = Passivating()
    assert m.stats()["dirty"] == 1
    written = store.written
    new_session(m, n=0)  # evicts the first
    assert store.written == written + 2  # the dirty one, then the new one
    assert Passivating.calls == [token(first)]
    assert store.raw("shop", token(first)) is not None
    assert m.stats()["evictions"] == 1


def test_session_in_use_is_not_evicted(make: MakeManager, store: RecordingStore) -> None:
    m = make(cache_size=1)
    sid = new_session(m, n=1)
    active = m.lifecycle.begin_request("shop", sid)
    new_session(m, n=2)  # the only idle session is the new one: it goes, written first
    m.lifecycle.end_request(active, ok=True)
    loads = len(store.loads)
    with m.request(app="shop", session_id=sid) as s:
        assert s["n"] == 1
    assert len(store.loads) == loads and m.stats()["evictions"] == 1


def test_overflow_false_refuses_when_nothing_can_be_evicted(make: MakeManager) -> None:
    m = make(cache_size=2, overflow=False)
    sids = [new_session(m, n=i) for i in range(2)]
    held = [m.lifecycle.begin_request("shop", sid) for sid in sids]
    with m.request(app="shop") as s, pytest.raises(sk.CacheFull):
        s["n"] = 3
    assert len(s) == 0
    assert m.stats()["refusals"] == 1
    for a in held:
        m.lifecycle.end_request(a, ok=True)


def test_overflow_false_makes_room_from_idle_sessions(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(cache_size=2, overflow=False, write=sk.Manual())
    sids = [new_session(m, n=i) for i in range(2)]
    with m.request(app="shop", session_id=sids[0]) as s:
        s["n"] = 10  # dirty: written before it leaves
    new_session(m, n=3)
    st = m.stats()
    assert st["refusals"] == 0 and st["live"] == 2 and st["evictions"] == 1
    with m.request(app="shop", session_id=sids[0]) as s:
        assert s["n"] == 10
