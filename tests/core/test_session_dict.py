"""``Session`` is a ``dict`` (issue 10): what a framework's app does with ``request.session``
behaves as on a dict, and every mutator is still tracked, validated and undone on failure."""

from __future__ import annotations

import json

import pytest

import sessionkeeper as sk

from .conftest import MakeManager, RecordingStore, held, new_session


def test_a_session_is_a_dict_and_json_serializable(make: MakeManager) -> None:
    m = make()
    with m.request("shop") as s:
        s["a"] = 1
        s["b"] = [1, 2]
        assert isinstance(s, dict)
        assert json.loads(json.dumps({"session": s})) == {"session": {"a": 1, "b": [1, 2]}}
        assert s == {"a": 1, "b": [1, 2]}
        copied = s.copy()
        assert type(copied) is dict and copied == {"a": 1, "b": [1, 2]}
        assert list(s) == ["a", "b"] and list(s.items()) == [("a", 1), ("b", [1, 2])]
        assert type(s | {"c": 3}) is dict and (s | {"c": 3})["c"] == 3


def test_every_mutator_is_tracked_and_reaches_the_store(
    make: MakeManager, store: RecordingStore
) -> None:
    m = make(write=sk.EndOfRequest())
    sid = new_session(m, k=0)
    with m.request("shop", sid) as s:
        s |= {"a": 1, "b": 2, "c": 3}
        s.update(d=4)
        assert s.setdefault("e", 5) == 5 and s.setdefault("e", 6) == 5
        assert s.popitem() == ("e", 5)  # last in, first out
        assert s.pop("d") == 4 and s.pop("absent", None) is None
        del s["c"]
        assert set(s.changes.set_keys) == {"a", "b"}
        assert set(s.changes.deleted_keys) >= {"c", "d", "e"}
    with m.request("shop", sid) as s:
        assert dict(s) == {"k": 0, "a": 1, "b": 2}
    token = sid.split(".")[0]
    stored = store.raw("shop", token)
    assert stored is not None and set(stored.attributes) == {"k", "a", "b"}


def test_popitem_of_an_empty_session_raises_key_error(make: MakeManager) -> None:
    with make().request("shop") as s, pytest.raises(KeyError):
        s.popitem()


def test_update_validates_each_value_naming_the_key(make: MakeManager) -> None:
    with make().request("shop") as s:
        with pytest.raises(sk.SerializationError, match="bad"):
            s |= {"bad": object()}
        with pytest.raises(sk.SerializationError, match="worse"):
            s.setdefault("worse", object())
        assert dict(s) == {}


def test_a_failed_request_undoes_every_mutator(make: MakeManager) -> None:
    m = make(write=sk.EndOfRequest())
    sid = new_session(m, k=0, cart=[1])
    with pytest.raises(RuntimeError), m.request("shop", sid) as s:
        s |= {"a": 1}
        s.setdefault("b", 2)
        s.popitem()
        s.pop("k")
        for key, value in s.items():  # an in-place mutation of a value read through items()
            if key == "cart":
                value.append(2)
        raise RuntimeError("boom")
    with m.request("shop", sid) as s:
        assert dict(s) == {"k": 0, "cart": [1]}


def test_clear_is_tracked_as_deletes(make: MakeManager) -> None:
    m = make(write=sk.EndOfRequest())
    sid = new_session(m, a=1, b=2)
    with m.request("shop", sid) as s:
        s.clear()
        assert len(s) == 0 and set(s.changes.deleted_keys) == {"a", "b"}


@pytest.mark.parametrize("empty", ["clear", "pop"])
def test_emptying_a_session_ends_it_and_retires_its_id(
    make: MakeManager, store: RecordingStore, empty: str
) -> None:
    """Logout by ``clear()`` (or popping the last key): the cookie is deleted and the id is
    tombstoned, so the next login gets a new one."""
    m = make(write=sk.EndOfRequest())
    sid = new_session(m, user=1)
    with held(m, "shop", sid) as (active, s):
        if empty == "clear":
            s.clear()
        else:
            s.pop("user")
    assert m.lifecycle.cookie_action(active) == "delete"
    assert store.raw("shop", sid.split(".")[0]) is None
    with m.request("shop", sid) as s:
        s["user"] = 2
        assert s.id != sid  # never reused


def test_a_session_emptied_and_refilled_in_one_request_lives_on(make: MakeManager) -> None:
    m = make(write=sk.EndOfRequest())
    sid = new_session(m, user=1)
    with held(m, "shop", sid) as (active, s):
        s.clear()
        s["user"] = 2
    assert m.lifecycle.cookie_action(active) is None
    with m.request("shop", sid) as s:
        assert s.id == sid and dict(s) == {"user": 2}


def test_data_view_records_no_read(make: MakeManager) -> None:
    """The manager's own copy of the attributes (a write's, an eviction's, a sweep's) is not the
    app reading them: on a dict subclass whose ``__iter__`` is overridden, ``dict.copy`` goes
    through ``__getitem__``, which tracks a read of every key (under ``contents="accessed"``
    each is then serialized again with the next write) and copies mutable values into the
    request's undo log."""
    m = make(contents="accessed")
    sid = new_session(m, a=1, b=[1, 2])
    with m.request("shop", sid) as s:
        view = s.data_view()
        assert type(view) is dict and view == {"a": 1, "b": [1, 2]}
        assert not s.changes.read_keys
        assert not s.has_changes()
