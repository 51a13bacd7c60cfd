"""``SESSION_ENGINE = "sessionkeeper.django"`` while the store is down or refuses writes: a
request that needs the store, or whose change cannot be stored, answers 503 and changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from django.test import Client, override_settings

import tests.adapters.test_django as base  # configures Django, and holds the views' URLconf
from sessionkeeper import django as skd
from tests.adapters.helpers import FlakyStore, WriteFailingStore


@pytest.fixture(autouse=True)
def fresh_manager() -> Iterator[None]:
    with override_settings(SESSIONKEEPER=base.config()):
        yield


def test_store_down_for_an_uncached_session_is_503() -> None:
    store = FlakyStore()
    with override_settings(SESSIONKEEPER=base.config(STORE=store)):
        c = Client()
        c.post("/incr")
        cookie = c.cookies["sessionid"].value
    with override_settings(SESSIONKEEPER=base.config(STORE=store, NODE="b")):
        store.down = True
        c = Client()
        c.cookies["sessionid"] = cookie
        r = c.post("/incr")
        assert r.status_code == 503 and r["Retry-After"] == "5"
        assert r.content == b"Session store unavailable, please retry.\n"
        assert skd.get_manager().stats()["unavailable"] == 1


@pytest.mark.parametrize("route", ["/login", "/logout", "/create", "/create?new=1"])
def test_a_session_operation_during_an_outage_is_503(route: str) -> None:
    store = FlakyStore()
    with override_settings(SESSIONKEEPER=base.config(STORE=store)):
        c = Client()
        if "new" not in route:
            c.post("/incr")
        store.down = True
        r = c.post(route)
        assert r.status_code == 503 and r["Retry-After"] == "5"
        assert r.content == b"Session store unavailable, please retry.\n"
        assert "sessionid" not in r.cookies and base.manager().stats()["unavailable"] == 1
        store.down = False
        assert c.get("/read").json()["n"] == (None if "new" in route else 1)


@pytest.mark.parametrize("route", ["/alogin", "/alogout"])
def test_an_async_session_operation_during_an_outage_is_503(route: str) -> None:
    from django.test import AsyncClient

    store = FlakyStore()
    with override_settings(SESSIONKEEPER=base.config(STORE=store)):

        async def main() -> None:
            c = AsyncClient()
            r = await c.post("/aincr")
            c.cookies["sessionid"] = r.cookies["sessionid"].value
            store.down = True
            r = await c.post(route)
            assert r.status_code == 503 and r["Retry-After"] == "5"
            assert "sessionid" not in r.cookies
            store.down = False
            assert (await c.post("/aincr")).json() == {"n": 2}

        asyncio.run(main())


def test_a_changed_request_whose_write_is_refused_answers_503() -> None:
    """Defect 13: under EndOfRequest a change that cannot be stored is not acknowledged."""
    store = WriteFailingStore()
    with override_settings(SESSIONKEEPER=base.config(STORE=store, OUTAGE_BACKOFF_S=0)):
        c = Client()
        assert c.post("/incr").json() == {"n": 1}
        store.writes_down = True
        r = c.post("/incr")
        assert r.status_code == 503 and r["Retry-After"] == "5"
        assert r.content == b"Session store unavailable, please retry.\n"
        assert "sessionid" not in r.cookies
        assert c.get("/read").json()["n"] == 1  # rolled back; reads still served
        store.writes_down = False
        assert c.post("/incr").json() == {"n": 2}
