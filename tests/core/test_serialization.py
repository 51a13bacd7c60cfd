"""Round trips of every supported type, for json and msgpack."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sessionkeeper as sk
from sessionkeeper.serialization import make_serializer

VALUES: list[Any] = [
    dt.datetime(2024, 2, 29, 13, 45, 1, 123456),
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    dt.date(1999, 12, 31),
    dt.time(23, 59, 59, 999),
    Decimal("3.14159265358979323846264338327950288"),
    Decimal("-0"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    b"\x00\xff binary",
    bytearray(b"ba"),
    {1, 2, "three"},
    frozenset({(1, 2), "x"}),
    (1, (2, [3, {"a": (4,)}])),
    {"nested": {"list": [1, 2.5, None, True], "set": {1}}},
    {1: "int key", (1, 2): "tuple key", None: "none", frozenset({1}): "fs"},
    {"$sk": "a user key that looks like a tag", "v": 1},
    float("inf"),
    -0.0,
    "unicode ☃ \x00 \ud7ff",
    [],
    {},
    10**30,
]


@pytest.mark.parametrize("name", ["json", "msgpack"])
@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_round_trip(name: str, value: Any) -> None:
    if name == "msgpack" and value == 10**30:
        pytest.skip("msgpack integers are 64-bit")
    ser = make_serializer(name)
    back = ser.loads(ser.dumps(value))
    expected = bytes(value) if isinstance(value, bytearray) else value
    assert back == expected and type(back) is type(expected)


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_nan(name: str) -> None:
    ser = make_serializer(name)
    assert math.isnan(ser.loads(ser.dumps(float("nan"))))
    assert math.isnan(ser.loads(ser.dumps([float("nan")]))[0])


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.decimals(allow_nan=False)
    | st.uuids()
    | st.datetimes()
    | st.dates(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(), inner, max_size=4)
        | st.dictionaries(st.integers(-(2**63), 2**63 - 1) | st.text(), inner, max_size=4)
        | st.frozensets(st.integers(-(2**63), 2**63 - 1) | st.text(), max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(value=JSONISH)
@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_round_trip_property(name: str, value: Any) -> None:
    ser = make_serializer(name)
    assert ser.loads(ser.dumps(value)) == value


def test_values_round_trip_through_the_store(make: Any) -> None:
    a, b = make(node="a"), make(node="b")
    with a.request(app="shop") as s:
        s["when"] = dt.datetime(2024, 5, 1, 12)
        s["tags"] = {"x", "y"}
        s["price"] = Decimal("9.99")
    with b.request(app="shop", session_id=s.id) as s2:
        assert s2["when"] == dt.datetime(2024, 5, 1, 12)
        assert s2["tags"] == {"x", "y"} and s2["price"] == Decimal("9.99")


def test_signed_pickle_round_trips_arbitrary_objects() -> None:
    ser = make_serializer("pickle", pickle_key=b"k" * 16)
    value = {"cls": sk.FakeClock, "c": complex(1, 2)}
    assert ser.loads(ser.dumps(value)) == value
    with pytest.raises(sk.CorruptSessionData):
        make_serializer("pickle", pickle_key=b"j" * 16).loads(ser.dumps(value))


def test_places_of_different_app_token_key_differ() -> None:
    from sessionkeeper.serialization import place

    triples = [("ab", "t", "k"), ("a", "bt", "k"), ("a", "b", "tk"), ("1:a", "t", "k"),
               ("", "1:at", "k"), ("a\ud800", "t", "k"), ("a", "t", "k\x00")]  # fmt: skip
    assert len({place(*t) for t in triples}) == len(triples)
    ser = make_serializer("pickle", pickle_key=b"k" * 16)
    blob = ser.dumps("v", place=place("a", "t", "k"))
    assert ser.loads(blob, place=place("a", "t", "k")) == "v"
    with pytest.raises(sk.CorruptSessionData):
        ser.loads(blob, place=place("a", "t", "j"))


def _encoder_bytes(value: Any) -> bytes:
    """What the JSON serializer's general path (its encoder) writes for ``value``."""
    from sessionkeeper.serialization import JsonSerializer, _encode

    return JsonSerializer._encoder.encode(_encode(value)).encode("utf-8")


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
)


@settings(max_examples=400, deadline=None)
@given(value=SCALARS)
def test_json_scalars_are_the_encoders_bytes(value: Any) -> None:
    """The scalar shortcut writes exactly what the encoder writes: a stored value's bytes (and
    the hashes that tell a changed value from a read one) do not depend on the path taken."""
    assert make_serializer("json").dumps(value) == _encoder_bytes(value)


def test_json_scalar_shortcut_keeps_the_encoders_errors_and_subclasses() -> None:
    from markupsafe import Markup

    ser = make_serializer("json")
    for value in ("lone \ud800 surrogate", 10**5000):  # refused by both paths alike
        with pytest.raises(ValueError):
            _encoder_bytes(value)
        with pytest.raises(ValueError):
            ser.dumps(value)

    class Flag(int):
        def __repr__(self) -> str:
            return "Flag()"

    for value in (Markup("<b>x</b>"), Flag(3)):  # a subclass takes the general path
        assert ser.dumps(value) == _encoder_bytes(value)
    assert ser.loads(ser.dumps(Markup("<b>x</b>"))) == Markup("<b>x</b>")


def test_a_serializer_of_the_applications_gets_each_values_place(make: Any) -> None:
    """The writer leaves out the place only for the built-in serializers that ignore it; one
    of the application's, a subclass of a built-in one too, gets it with every value."""
    from sessionkeeper.serialization import JsonSerializer, place

    class Placed(JsonSerializer):
        places: list[bytes] = []

        def dumps(self, value: Any, *, place: bytes = b"") -> bytes:
            self.places.append(place)
            return super().dumps(value, place=place)

    m = make(serializer=Placed())
    with m.request(app="shop") as s:
        s["n"] = 1
    Placed.places.clear()
    with m.request(app="shop", session_id=s.id) as s:
        s["n"] = 2
    token = s.id.split(".")[0]
    assert place("shop", token, "n") in Placed.places
    assert b"" not in Placed.places
