"""Listeners and value hooks."""

from __future__ import annotations

from typing import Any

import sessionkeeper as sk

from .conftest import MakeManager, new_session


class Recorder(sk.SessionListener):
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    def session_created(self, event: sk.SessionEvent) -> None:
        self.log.append(("created", event.token))

    def session_destroyed(self, event: sk.SessionEvent) -> None:
        self.log.append(("destroyed", event.reason))

    def attribute_added(self, event: sk.AttributeEvent) -> None:
        self.log.append(("added", (event.key, event.value)))

    def attribute_replaced(self, event: sk.AttributeEvent) -> None:
        self.log.append(("replaced", (event.key, event.value, event.old_value)))

    def attribute_removed(self, event: sk.AttributeEvent) -> None:
        self.log.append(("removed", (event.key, event.value)))


class Broken(sk.SessionListener):
    def attribute_added(self, event: sk.AttributeEvent) -> None:
        raise RuntimeError("listener bug")


def test_listener_events_in_order(make: MakeManager) -> None:
    m = make()
    r = Recorder()
    m.add_listener(Broken())
    m.add_listener(r)
    with m.request(app="shop") as s:
        s["a"] = 1
        s["a"] = 2
        del s["a"]
        s.invalidate()
    assert r.log == [
        ("created", r.log[0][1]),
        ("added", ("a", 1)),
        ("replaced", ("a", 2, 1)),
        ("removed", ("a", 2)),
        ("destroyed", sk.DestroyReason.INVALIDATED),
    ]


class Hooked:
    log: list[str] = []

    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Hooked) and other.name == self.name

    def value_bound(self, session: sk.Session, key: str) -> None:
        Hooked.log.append(f"bound {self.name}")

    def value_unbound(self, session: sk.Session, key: str) -> None:
        Hooked.log.append(f"unbound {self.name}")

    def session_did_activate(self, session: sk.Session) -> None:
        Hooked.log.append(f"activated {self.name}")


def test_value_hooks(make: MakeManager) -> None:
    Hooked.log = []
    key = b"0123456789abcdef"
    a = make(node="a", serializer="pickle", pickle_key=key)
    b = make(node="b", serializer="pickle", pickle_key=key)
    with a.request(app="shop") as s:
        s["x"] = Hooked("one")
        s["x"] = Hooked("two")
    with b.request(app="shop", session_id=s.id) as s2:
        assert s2["x"] == Hooked("two")
        s2.invalidate()
    assert Hooked.log == [
        "bound one",
        "unbound one",
        "bound two",
        "activated two",
        "unbound two",
    ]


def test_created_fires_once_per_session(make: MakeManager) -> None:
    m = make()
    r = Recorder()
    m.add_listener(r)
    sid = new_session(m, a=1)
    with m.request(app="shop", session_id=sid) as s:
        s["b"] = 2
    assert [e for e, _ in r.log].count("created") == 1
