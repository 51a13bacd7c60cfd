"""Threads on one node, and two nodes on one store."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest

import sessionkeeper as sk

from .conftest import MakeManager, RecordingStore, new_session


def hammer(m: sk.SessionManager, sid: str, threads: int, per_thread: int) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work() -> None:
        try:
            start.wait(5)
            for _ in range(per_thread):
                with m.request(app="shop", session_id=sid) as s:
                    s["n"] = s["n"] + 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not any(t.is_alive() for t in ts)
    return errors


@pytest.mark.parametrize("policy", [sk.EndOfRequest(), sk.TimeBased(10)], ids=lambda p: p.spec())
def test_serialized_read_modify_write_loses_nothing(
    make: MakeManager, store: RecordingStore, policy: sk.WritePolicy
) -> None:
    m = make(serialize_access=True, access_wait_s=30, write=policy)
    sid = new_session(m, n=0)
    assert hammer(m, sid, threads=8, per_thread=1000) == []
    with m.request(app="shop", session_id=sid) as s:
        assert s["n"] == 8000
    m.flush()
    assert store.raw("shop", sid.split(".")[0]).attributes["n"] == b"8000"  # type: ignore[union-attr]


def test_access_timeout_after_access_wait(make: MakeManager) -> None:
    m = make(serialize_access=True, access_wait_s=0.05)
    sid = new_session(m, n=0)
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with m.request(app="shop", session_id=sid):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    assert held.wait(5)
    with pytest.raises(sk.AccessTimeout), m.request(app="shop", session_id=sid):
        pass
    release.set()
    t.join(5)
    with m.request(app="shop", session_id=sid) as s:  # free again
        assert s["n"] == 0
    assert m.stats()["access_timeouts"] == 1


def test_without_serialize_access_sets_are_still_atomic(make: MakeManager) -> None:
    m = make()
    sid = new_session(m, n=0)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(300):
                with m.request(app="shop", session_id=sid) as s:
                    s[f"k{i}"] = j
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert errors == []
    with m.request(app="shop", session_id=sid) as s:
        assert all(s[f"k{i}"] == 299 for i in range(8))


def two_nodes_write_different_keys(a: sk.SessionManager, b: sk.SessionManager) -> Any:
    sid = new_session(a, base=0)
    tok = sid.split(".")[0]
    sid_b = f"{tok}.b"
    with b.request(app="shop", session_id=sid):
        pass  # b caches it too
    go = threading.Barrier(2)

    def on(m: sk.SessionManager, node_sid: str, key: str) -> None:
        go.wait(5)
        for i in range(50):
            with m.request(app="shop", session_id=node_sid) as s:
                s[key] = i

    ts = [
        threading.Thread(target=on, args=(a, sid, "from_a")),
        threading.Thread(target=on, args=(b, sid_b, "from_b")),
    ]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    return tok


def test_two_nodes_writing_different_keys_keep_both(
    make: MakeManager, store: RecordingStore
) -> None:
    a, b = make(node="a"), make(node="b")
    tok = two_nodes_write_different_keys(a, b)
    stored = store.raw("shop", tok)
    assert stored is not None
    assert stored.attributes["from_a"] == b"49" and stored.attributes["from_b"] == b"49"
    assert stored.attributes["base"] == b"0"


def test_two_nodes_on_a_sqlite_file(tmp_path: Any, clock: sk.FakeClock) -> None:
    pytest.importorskip("sessionkeeper.stores.sql")
    url = f"sqlite:///{tmp_path / 'sessions.db'}"
    a = sk.SessionManager(url, node="a", clock=clock, housekeeping=False)
    b = sk.SessionManager(url, node="b", clock=clock, housekeeping=False)
    try:
        tok = two_nodes_write_different_keys(a, b)
        with b.request(app="shop", session_id=f"{tok}.a") as s:  # b reads the store
            assert s["from_a"] == 49 and s["from_b"] == 49 and s["base"] == 0
    finally:
        a.close(deadline_s=0)
        b.close(deadline_s=0)


def test_stats_counts_stay_exact_under_threads_and_concurrent_snapshots() -> None:
    import sys

    from sessionkeeper.stats import Stats

    stats = Stats()
    threads, per_thread = 8, 20_000
    start = threading.Barrier(threads + 1)
    seen: list[int] = []

    def work() -> None:
        start.wait()
        for i in range(per_thread):
            stats.add("cache_hits")
            if i % 1000 == 0:
                stats.add("touches", 3)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        ts = [threading.Thread(target=work) for _ in range(threads)]
        for t in ts:
            t.start()
        start.wait()
        while any(t.is_alive() for t in ts):
            seen.append(stats.snapshot()["cache_hits"])
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
    final = stats.snapshot()
    assert final["cache_hits"] == threads * per_thread
    assert final["touches"] == threads * (per_thread // 1000) * 3
    assert seen == sorted(seen) and all(0 <= v <= threads * per_thread for v in seen)
    assert stats.snapshot() == final  # reading changes nothing


def test_concurrent_flushes_while_requests_reorder_the_lru_never_deadlock() -> None:
    """Defect 3: each flush takes its sessions' write locks in cache (LRU) order, which requests
    keep changing; two flushes at once then waited on each other. One order, (app, token)."""
    m = sk.SessionManager(sk.MemoryStore(), node="a", write=sk.Manual(), housekeeping=False)
    sids = [new_session(m, n=0) for _ in range(40)]
    start = threading.Barrier(4)
    errors: list[BaseException] = []
    served = threading.Event()

    def requests(seed: int) -> None:
        import random

        rnd = random.Random(seed)
        try:
            start.wait(5)
            for _ in range(5000):
                with m.request(app="shop", session_id=rnd.choice(sids)) as s:
                    s["n"] = s["n"] + 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            served.set()

    def flushes() -> None:
        try:
            start.wait(5)
            while not served.is_set():
                m.flush()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    ts = [threading.Thread(target=requests, args=(i,), daemon=True) for i in range(2)]
    ts += [threading.Thread(target=flushes, daemon=True) for _ in range(2)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads interleave inside a flush, as on several cores
    try:
        for t in ts:
            t.start()
        deadline = time.monotonic() + 20  # the work takes about a second
        for t in ts:
            t.join(max(0.0, deadline - time.monotonic()))
    finally:
        sys.setswitchinterval(switch)
    hung = [t for t in ts if t.is_alive()]
    assert not hung, f"{len(hung)} of {len(ts)} threads hang (a lock-order deadlock)"
    assert errors == []
    m.close(deadline_s=0)  # only when nothing hangs: a hung thread holds write locks


def test_reads_are_not_lost_while_the_writer_takes_the_tracking(
    make: MakeManager, store: RecordingStore
) -> None:
    """Issue 9, defect 6: under contents="accessed" a read key is written when its bytes
    changed. A read recorded while a flush swaps out the tracking must land in the write or in
    the next one, never in the set the flush already took. Each value is mutated in place and
    then read, so every mutation is covered by a read that came after it."""
    m = make(write=sk.Manual(), contents="accessed")
    keys = [f"k{i}" for i in range(2000)]
    sid = new_session(m, **{k: [0] for k in keys})
    done = threading.Event()
    errors: list[BaseException] = []

    def mutate() -> None:
        try:
            with m.request(app="shop", session_id=sid) as s:
                held = {k: s[k] for k in keys}
                for k in keys:
                    held[k].append(1)  # mutated in place through a reference kept...
                    s.get(k)  # ...and the read after it that must get it written
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, inside the writer's swap too
    try:
        reader = threading.Thread(target=mutate)
        reader.start()
        while not done.is_set():
            m.flush()
        reader.join(60)
    finally:
        sys.setswitchinterval(old)
    assert not errors
    m.flush()
    stored = store.raw("shop", sid.split(".")[0])
    assert stored is not None
    unwritten = [k for k in keys if m.serializer.loads(stored.attributes[k]) != [0, 1]]
    assert unwritten == []
