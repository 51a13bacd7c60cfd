"""The small manager and session methods the framework adapters rely on."""

from __future__ import annotations

import asyncio

import sessionkeeper as sk
from sessionkeeper.session import current_request


def _manager() -> sk.SessionManager:
    return sk.SessionManager("memory://", node="n1", housekeeping=False, clock=sk.FakeClock())


def test_set_timeout_is_written_and_expires_the_session() -> None:
    m = _manager()
    with m.request("a") as s:
        s["x"] = 1
        s.set_timeout(60)
    sid = s.id
    stored = m.store.load("a", s.token)
    assert stored is not None and stored.timeout_s == 60
    assert m.lifecycle.exists("a", sid)
    assert isinstance(m.clock, sk.FakeClock)
    m.clock.advance(61)
    assert not m.lifecycle.exists("a", sid)


def test_mark_modified_writes_in_place_mutation_under_updated_contents() -> None:
    m = _manager()
    with m.request("a") as s:
        s["cart"] = []
    with m.request("a", s.id) as s2:
        s2["cart"].append("apple")
        s2.mark_modified()
    stored = m.store.load("a", s.token)
    assert stored is not None and b"apple" in stored.attributes["cart"]


def test_exists_is_false_for_garbage_and_unknown_ids() -> None:
    m = _manager()
    assert not m.lifecycle.exists("a", None)
    assert not m.lifecycle.exists("a", "not an id")
    assert not m.lifecycle.exists("a", "A" * 32 + ".n1")


def test_bind_lets_an_async_caller_roll_back_a_request_begun_in_a_thread() -> None:
    m = _manager()
    with m.request("a") as s:
        s["n"] = 1
    sid = s.id

    async def main() -> None:
        active = await asyncio.to_thread(m.lifecycle.begin_request, "a", sid)
        assert current_request.get() is None  # the thread's context did not flow back
        m.lifecycle.bind(active)
        active.session["n"] = 2
        m.lifecycle.end_request(active, ok=False)

    asyncio.run(main())
    with m.request("a", sid) as s3:
        assert s3["n"] == 1
