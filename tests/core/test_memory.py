"""What a session costs while it just sits in the cache (issue 11): no per-request record, no
lock or tracking set it does not use. Counted with ``tracemalloc`` (the same count every run),
beside the same data in plain dicts; the resident-memory figure at 100,000 sessions is
``bench/memory.py``'s."""

from __future__ import annotations

import gc
import secrets
import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import sessionkeeper as sk

from .conftest import MakeManager

SESSIONS = 2_000
#: What sessionkeeper may keep per cached session beyond the id and data (plain dicts): the
#: Session, its change tracking (which is also its lock), its cache entry. About 315 bytes; it
#: was about 2,150, then 470 (a lock and a tracking object apart, a key tuple per session, the
#: creating request's number kept while idle).
MAX_OVERHEAD_BYTES = 350


def attributes(i: int) -> dict[str, Any]:
    return {"user_id": 100_000 + i, "name": f"user{i}", "cart": [f"item{i}", "pear"], "n": i}


def allocated(build: Callable[[], Any]) -> int:
    """The bytes ``build()``'s result holds, as tracemalloc counts them."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return after - before


def test_a_cached_session_costs_little_beyond_its_id_and_data(make: MakeManager) -> None:
    def dicts() -> Any:
        return {secrets.token_urlsafe(24): attributes(i) for i in range(SESSIONS)}

    def cached() -> Any:
        # Nothing written: the store holds nothing, every key stays unwritten (tracked).
        m = make(
            store=sk.MemoryStore(), write=sk.Manual(), cache_size=SESSIONS, save_on_create=False
        )
        for i in range(SESSIONS):
            with m.request("default", None) as s:
                s.update(attributes(i))
        assert m.stats()["live"] == SESSIONS and m.stats()["store_sessions_written"] == 0
        return m

    with make(store=sk.MemoryStore()).request("default", None) as s:  # imports, first use
        s["warm"] = 1
    floor = allocated(dicts) / SESSIONS
    per_session = allocated(cached) / SESSIONS
    assert per_session - floor <= MAX_OVERHEAD_BYTES, (per_session, floor)


def test_the_locks_made_on_first_use_are_one_lock_per_session(make: MakeManager) -> None:
    """Threads asking a new session for its write or access lock at once all get the same one."""
    m = make()
    with m.request("default", None) as s:
        s["k"] = 1
    barrier = threading.Barrier(8)
    got: list[tuple[int, int]] = []

    def ask() -> None:
        barrier.wait()
        got.append((id(s.write_lock), id(s.access_lock)))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1
