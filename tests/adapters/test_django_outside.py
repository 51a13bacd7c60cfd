"""A ``SessionStore`` used outside a request (a shell, a management command, a ``RequestFactory``
test, the test client's ``client.session``) works on a private copy that ``save()`` writes through
the manager, as Django's db and cache backends do (``sessionkeeper/django/draft.py``); and every
``SessionBase`` method, sync and async, called that way."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings

import tests.adapters.test_django as base  # configures Django, and holds the views' URLconf
from sessionkeeper import SerializationError, StoreUnavailable
from sessionkeeper import django as skd
from sessionkeeper.stores.memory import MemoryStore
from tests.adapters.helpers import WriteFailingStore


@pytest.fixture(autouse=True)
def fresh_manager() -> Iterator[None]:
    with override_settings(SESSIONKEEPER=base.config()):
        yield


def stored(key: str | None) -> dict[str, object] | None:
    """The session's attributes as the store has them (encoded), or ``None``."""
    assert key is not None
    m = skd.get_manager()
    row = m.store.load("default", key.split(".")[0])
    return None if row is None else {k: m.serializer.loads(v) for k, v in row.attributes.items()}


def saved_store(**data: object) -> skd.SessionStore:
    s = skd.SessionStore()
    s.update(data)
    s.save()
    return s


def test_an_unsaved_change_is_neither_stored_nor_seen_by_a_request() -> None:
    s = saved_store(n=1)
    s["n"] = 7
    s["extra"] = "x"
    assert stored(s.session_key) == {"n": 1}
    c = Client()
    c.cookies["sessionid"] = s.session_key
    assert c.get("/read").json()["n"] == 1


def test_save_writes_now_and_a_request_sees_it_whatever_the_policy() -> None:
    with override_settings(SESSIONKEEPER=base.config(WRITE="time-based:3600")):
        s = saved_store(n=1)
        assert stored(s.session_key) == {"n": 1}  # under a deferred policy, written by save()
        s["n"] = 5
        s.save()
        assert stored(s.session_key) == {"n": 5}
        c = Client()
        c.cookies["sessionid"] = s.session_key
        assert c.get("/read").json()["n"] == 5  # in the cache too


def test_a_change_in_place_is_private_until_saved() -> None:
    s = saved_store(cart=["apple"])
    s["cart"].append("pear")  # no modified=True: the copy is compared with what was read
    assert skd.SessionStore(s.session_key)["cart"] == ["apple"]
    s.save()
    assert skd.SessionStore(s.session_key)["cart"] == ["apple", "pear"]
    assert stored(s.session_key) == {"cart": ["apple", "pear"]}


def test_save_applies_only_what_the_copy_changed_so_a_requests_change_survives() -> None:
    s = saved_store(n=1, note="a")
    c = Client()
    c.cookies["sessionid"] = s.session_key
    assert s["note"] == "a"  # the copy is read here, n=1 in it
    assert c.post("/incr").json() == {"n": 2}  # a request changes n meanwhile
    s["note"] = "b"
    del s["note"]
    s["other"] = 1
    s.save()
    assert stored(s.session_key) == {"n": 2, "other": 1}


def test_a_store_held_outside_a_request_does_not_block_requests() -> None:
    with override_settings(SESSIONKEEPER=base.config(SERIALIZE_ACCESS=True, ACCESS_WAIT_S=0.2)):
        s = saved_store(n=1)
        s["x"] = 1  # read and changed, not saved: it holds nothing
        c = Client()
        c.cookies["sessionid"] = s.session_key
        assert c.post("/incr").json() == {"n": 2}
        s.save()
        assert stored(s.session_key) == {"n": 2, "x": 1}


def test_the_test_clients_session_is_saved_into_the_next_request() -> None:
    with override_settings(SESSIONKEEPER=base.config(SERIALIZE_ACCESS=True, ACCESS_WAIT_S=0.2)):
        c = Client()
        session = c.session  # Django's idiom: a SessionStore made outside a request, then saved
        session["n"] = 41
        session.save()
        c.cookies["sessionid"] = session.session_key
        assert c.post("/incr").json() == {"n": 42}
        assert c.session["n"] == 42


def test_cycle_key_and_flush_reach_the_store_at_once() -> None:
    with override_settings(SESSIONKEEPER=base.config(WRITE="time-based:3600")):
        s = saved_store(n=1)
        first = s.session_key
        s["n"] = 2
        s.cycle_key()
        assert s.session_key != first and stored(first) is None
        assert stored(s.session_key) == {"n": 2}
        second = s.session_key
        s.flush()
        assert stored(second) is None and s.session_key is None and s.is_empty()
        assert not skd.SessionStore(second).exists(second)


def test_a_value_that_cannot_be_stored_is_refused_when_set() -> None:
    s = saved_store(n=1)
    with pytest.raises(SerializationError):
        s["bad"] = object()
    assert "bad" not in s


def test_a_failed_save_rolls_back_what_it_applied() -> None:
    store = WriteFailingStore()
    with override_settings(SESSIONKEEPER=base.config(STORE=store, OUTAGE_BACKOFF_S=0)):
        s = saved_store(n=1)
        store.writes_down = True
        s["n"] = 2
        with pytest.raises(StoreUnavailable):
            s.save()
        store.writes_down = False
        assert skd.SessionStore(s.session_key)["n"] == 1  # not in the cache either
        assert stored(s.session_key) == {"n": 1}


def test_two_nodes_keep_one_session_consistent_through_saves() -> None:
    store = MemoryStore()
    with override_settings(SESSIONKEEPER=base.config(STORE=store)):
        s = saved_store(n=1)
        key = s.session_key
    with override_settings(SESSIONKEEPER=base.config(STORE=store, NODE="b")):
        t = skd.SessionStore(key)
        assert t["n"] == 1 and t.session_key != key and t.session_key.endswith(".b")
        t["n"] = 3
        t.save()
        assert stored(t.session_key) == {"n": 3}


def test_sessionbase_methods_outside_a_request() -> None:
    s = skd.SessionStore()
    assert s.is_empty() and s.session_key is None
    s["a"] = 1
    s.update({"b": 2})
    s.set_test_cookie()
    assert s.test_cookie_worked()
    s.delete_test_cookie()
    assert s.setdefault("c", 3) == 3 and s.pop("c") == 3 and s.pop("zz", None) is None
    assert s.has_key("a") and "b" in s and s.get("zz", 9) == 9
    assert sorted(s.keys()) == ["a", "b"] and sorted(s.values()) == [1, 2]
    assert sorted(s.items()) == [("a", 1), ("b", 2)]
    s.save()
    key = s.session_key
    assert key and key.endswith(".a") and s.exists(key) and not s.exists("nope" * 8)
    assert s.get_expiry_age() == settings.SESSION_COOKIE_AGE
    assert not s.get_expire_at_browser_close()
    assert s.get_expiry_date() is not None
    again = skd.SessionStore(key)
    assert again["a"] == 1 and again.session_key == key
    again.cycle_key()
    assert again.session_key != key and not again.exists(key) and again.exists(again.session_key)
    third = skd.SessionStore()
    third.create()
    assert third.session_key and third.exists(third.session_key)
    third.delete(again.session_key)
    assert not third.exists(again.session_key)
    again.flush()
    assert again.session_key is None and again.is_empty()
    with pytest.raises(KeyError):
        skd.SessionStore()["missing"]


def test_an_unsaved_change_outside_a_request_is_not_seen_by_another_store() -> None:
    s = skd.SessionStore()
    s["a"] = 1
    s.save()
    s["a"] = 2  # not saved
    assert skd.SessionStore(s.session_key)["a"] == 1


def test_an_unsaved_change_outside_a_request_is_rolled_back_by_load() -> None:
    s = skd.SessionStore()
    s["a"] = 1
    s.save()
    s["a"] = 2  # not saved: load() reads the session as stored
    assert s.load()["a"] == 1
    s["a"] = 3
    s.save()
    assert skd.SessionStore(s.session_key)["a"] == 3


def test_pop_takes_its_default_by_name() -> None:
    s = skd.SessionStore()
    s["a"] = 1
    s.modified = False
    assert s.pop("zz", default=None) is None and not s.modified
    assert asyncio.run(s.apop("zz", default=7)) == 7 and not s.modified
    assert s.pop("a", default=0) == 1 and s.modified
    with pytest.raises(KeyError):
        s.pop("zz")


def test_async_methods_and_cache_hits_stay_on_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    s = skd.SessionStore()
    s["n"] = 1
    s.save()
    key = s.session_key
    threads: list[int] = []  # where the store is read: never on the loop
    original = base.manager().lifecycle.begin_request

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(base.manager().lifecycle, "begin_request", spy)

    async def main() -> int:
        a = skd.SessionStore(key)
        assert await a.aget("n") == 1  # a cache hit: no thread
        await a.aset("n", 2)
        assert await a.ahas_key("n") and list(await a.akeys()) == ["n"]
        assert await a.asetdefault("m", 5) == 5 and await a.apop("m") == 5
        await a.aupdate({"o": 1})
        assert sorted(await a.aitems()) == [("n", 2), ("o", 1)]
        assert threads == []  # a cached session read and changed on the loop alone
        await a.aset_expiry(300)
        assert await a.aget_expiry_age() == 300
        assert not await a.aget_expire_at_browser_close()
        await a.asave()
        assert await a.aexists(key)
        await a.acycle_key()
        new_key = a.session_key
        assert new_key != key and not await a.aexists(key)
        b = skd.SessionStore()
        await b.acreate()
        assert await b.aexists(b.session_key)
        await b.aflush()
        assert b.session_key is None
        await skd.SessionStore.aclear_expired()
        c = skd.SessionStore(new_key)
        assert await c.aget("n") == 2
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads and loop_thread not in threads  # the writes' worker threads, not the loop
