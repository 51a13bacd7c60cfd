"""Issue 14's id and signature rules on PostgreSQL, MariaDB and Redis, two nodes on one server:
another app's planted id is not adopted (or, with sharing on, rotated away at login for every
app), and a signed pickle value copied to another session or key is refused and reported."""

from __future__ import annotations

from typing import Any

import pytest

from sessionkeeper.stores import SaveRequest, SaveStatus, Store
from tests.core.conftest import new_session

from .conftest import Target

KEY = b"0123456789abcdef0123"


def token(sid: str) -> str:
    return sid.split(".")[0]


def test_another_apps_planted_id_is_not_adopted(make: Any, target: Target) -> None:
    a, b = make(node="a"), make(node="b")
    planted = new_session(a, app="blog", mine=1)
    for m in (a, b):
        with m.request(app="shop", session_id=planted) as s:
            s["card"] = "4111"
        assert token(s.id) != token(planted)
    assert target.open().load("shop", token(planted)) is None


def test_a_shared_id_is_rotated_away_at_login_for_every_app(make: Any, target: Target) -> None:
    a = make(node="a", share_ids_across_apps=True)
    b = make(node="b", share_ids_across_apps=True)
    planted = new_session(a, app="blog", mine=1)
    with a.request(app="shop", session_id=planted) as s:
        s["cart"] = ["apple"]
        assert s.id == planted  # adopted: sharing is on
    with a.request(app="shop", session_id=planted) as s:
        s.rotate_id()
    new = s.id
    fresh = target.open()
    for app in ("shop", "blog"):
        assert fresh.load(app, token(planted)) is None
        with b.request(app=app, session_id=f"{token(planted)}.b") as s:
            assert len(s) == 0 and s.token != token(planted)
    with b.request(app="blog", session_id=new) as s:
        assert dict(s) == {"mine": 1}
    with b.request(app="shop", session_id=new) as s:
        assert dict(s) == {"cart": ["apple"]}


def copy_value(store: Store, source: tuple[str, str, str], app: str, tok: str, key: str) -> None:
    """What someone with write access to the store but not the key can do: copy a validly
    signed value from ``source`` (app, token, key) into ``key`` of another session."""
    src = store.load(source[0], source[1])
    dst = store.load(app, tok)
    assert src is not None and dst is not None
    [result] = store.save_many([SaveRequest(
        app=app, token=tok, expected_version=dst.version, created_at=dst.created_at,
        last_access_at=dst.last_access_at, timeout_s=dst.timeout_s,
        changed={key: src.attributes[source[2]]}, removed=frozenset(), full=False,
        owner=dst.owner, node="attacker",
    )])  # fmt: skip
    assert result.status is SaveStatus.SAVED


@pytest.mark.parametrize("move", ["session", "key"])
def test_a_moved_signed_pickle_value_is_refused(make: Any, target: Target, move: str) -> None:
    a = make(node="a", serializer="pickle", pickle_key=KEY)
    b = make(node="b", serializer="pickle", pickle_key=KEY)
    victim = token(new_session(a, role="user", note="admin"))
    attacker = token(new_session(a, role="admin"))
    source = ("shop", attacker, "role") if move == "session" else ("shop", victim, "note")
    copy_value(target.open(), source, "shop", victim, "role")
    with b.request(app="shop", session_id=f"{victim}.b") as s:
        assert "role" not in s and s.token != victim
    assert b.stats()["corrupt_sessions"] == 1
