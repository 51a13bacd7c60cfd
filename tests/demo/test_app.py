"""The demo shop in-process, on a MemoryStore: its pages and what it keeps in the session."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sessionkeeper import MemoryStore, SessionManager
from sessionkeeper.demo.app import DemoApp, manager_from_env, seqs_of
from sessionkeeper.errors import ConfigurationError


@pytest.fixture
def manager() -> Iterator[SessionManager]:
    m = SessionManager(MemoryStore(), node="n1", housekeeping=False)
    yield m
    m.close()


@pytest.fixture
def client(manager: SessionManager) -> Iterator[httpx.Client]:
    transport = httpx.WSGITransport(app=DemoApp(manager))
    with httpx.Client(transport=transport, base_url="http://shop") as c:
        yield c


def test_login_add_cart_checkout(client: httpx.Client, manager: SessionManager) -> None:
    r = client.post("/login?user=ann")
    assert r.status_code == 200 and r.json() == {"user": "ann", "node": "n1"}
    first_id = r.cookies["sessionid"]
    assert first_id.endswith(".n1")
    for seq in (1, 2, 3):
        assert client.post(f"/cart/add?item=fig&seq={seq}").json()["items"] == seq
    assert client.post("/checkout").json()["order"] == {"order": 1, "seqs": [1, 2, 3]}
    client.post("/cart/add?seq=4")
    body = client.get("/cart").json()
    assert body["user"] == "ann" and body["node"] == "n1"
    assert body["cart"] == [{"item": "apple", "seq": 4}]
    assert seqs_of(body) == {1, 2, 3, 4}
    assert manager.stats()["created"] == 1


def test_login_rotates_the_id(client: httpx.Client) -> None:
    client.post("/cart/add?seq=1")
    before = client.cookies["sessionid"]
    client.post("/login?user=bob")
    after = client.cookies["sessionid"]
    assert before != after
    assert seqs_of(client.get("/cart").json()) == {1}


def test_errors(client: httpx.Client) -> None:
    assert client.get("/nowhere").status_code == 404
    assert client.post("/cart/add?seq=x").status_code == 400
    assert client.post("/cart/add").status_code == 400
    assert client.post("/checkout").status_code == 409
    assert "sessionid" not in client.cookies  # nothing was ever stored


def test_health_and_stats_touch_no_session(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"ok": True, "node": "n1"}
    stats = client.get("/_stats").json()
    assert stats["node"] == "n1" and stats["policy"] == "end-of-request"
    assert stats["created"] == 0 and "sessionid" not in client.cookies


def test_manager_from_env() -> None:
    with pytest.raises(ConfigurationError, match="SESSIONKEEPER_STORE"):
        manager_from_env({})
    m = manager_from_env(
        {
            "SESSIONKEEPER_STORE": "memory://",
            "SESSIONKEEPER_NODE": "x",
            "SESSIONKEEPER_WRITE": "manual",
        }
    )
    try:
        assert m.node == "x" and m.policy.spec() == "manual"
    finally:
        m.close()
