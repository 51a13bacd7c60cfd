"""Turning attribute values into bytes and back, one attribute at a time.

JSON is the default. It round-trips the JSON types plus ``datetime``, ``date``, ``time``,
``Decimal``, ``UUID``, ``bytes``, ``set``, ``frozenset``, ``tuple`` and markupsafe's ``Markup``
through small tagged objects.
msgpack is an option (``msgpack`` extra). Pickle is used only when chosen, and then every value is
HMAC-SHA256 signed with a key the operator provides, over the value and its place (app, session
token, key: :func:`place`), so bytes written by anyone without the key are refused instead of
executed, and a signed value copied into another session, app or key is refused too.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import math
import pickle
import uuid
from decimal import Decimal
from typing import Any, Protocol

from .errors import ConfigurationError, CorruptSessionData

_TAG = "$sk"


class Serializer(Protocol):
    """Converts one attribute value. ``dumps`` raises ``TypeError``/``ValueError`` on a value it
    cannot represent; ``loads`` raises :class:`CorruptSessionData` on bytes it cannot read.

    ``place`` (:func:`place`) names where the value is stored; a serializer that signs binds the
    bytes to it, and ``loads`` refuses bytes written for another place. Others ignore it."""

    name: str

    def dumps(self, value: Any, *, place: bytes = b"") -> bytes: ...

    def loads(self, data: bytes, *, place: bytes = b"") -> Any: ...


def place(app: str, token: str, key: str) -> bytes:
    """Where an attribute value is stored, as the bytes a signature covers: each part after its
    length in characters, so no two different places give the same bytes (an app or key may hold
    any character). Called for every value written: one f-string, a tenth of joining parts."""
    return f"{len(app)}:{app}{len(token)}:{token}{len(key)}:{key}".encode("utf-8", "surrogatepass")


def _encode(value: Any) -> Any:
    # bool and int before the others: bool is an int, and both are plain JSON.
    if value is None or isinstance(value, (bool, int, str)):
        if type(value) is not str and isinstance(value, str) and hasattr(value, "__html__"):
            # markupsafe's Markup (Flask's flash(), Jinja): as a plain str it would be escaped
            return {_TAG: "markup", "v": str(value)}
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return {_TAG: "float", "v": repr(value)}
        return value
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and _TAG not in value:
            return {k: _encode(v) for k, v in value.items()}
        return {_TAG: "map", "v": [[_encode(k), _encode(v)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {_TAG: "tuple", "v": [_encode(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        tag = "set" if isinstance(value, set) else "frozenset"
        return {_TAG: tag, "v": [_encode(v) for v in value]}
    if isinstance(value, dt.datetime):
        return {_TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {_TAG: "date", "v": value.isoformat()}
    if isinstance(value, dt.time):
        return {_TAG: "time", "v": value.isoformat()}
    if isinstance(value, Decimal):
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, uuid.UUID):
        return {_TAG: "uuid", "v": str(value)}
    if isinstance(value, (bytes, bytearray)):
        return {_TAG: "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"JSON cannot represent {type(value).__name__}")


def _markup(text: str) -> Any:
    from markupsafe import Markup  # imported only here: a Markup was stored, so it is installed

    return Markup(text)


_DECODERS: dict[str, Any] = {
    "float": float,
    "tuple": lambda v: tuple(_decode(x) for x in v),
    "set": lambda v: {_decode(x) for x in v},
    "frozenset": lambda v: frozenset(_decode(x) for x in v),
    "map": lambda v: {_decode(k): _decode(x) for k, x in v},
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "decimal": Decimal,
    "uuid": uuid.UUID,
    "bytes": lambda v: base64.b64decode(v, validate=True),
    "markup": _markup,
}


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, dict):
        tag = value.get(_TAG)
        if tag is None:
            return {k: _decode(v) for k, v in value.items()}
        decoder = _DECODERS.get(tag)
        if decoder is None or set(value) != {_TAG, "v"}:
            raise ValueError(f"unknown tagged value {tag!r}")
        return decoder(value["v"])
    return value


#: JSON's own text of a str (the encoder's, for ``ensure_ascii=False``), and of its literals.
_encode_str = json.encoder.encode_basestring
_LITERALS = {None: b"null", True: b"true", False: b"false"}


class JsonSerializer:
    """The default. Human-readable in the store, safe to load from anyone."""

    name = "json"
    # Built once: json.dumps with non-default options builds an encoder per call, which was a
    # third of the cost of setting a small attribute. An encoder keeps no state between calls.
    _encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def dumps(self, value: Any, *, place: bytes = b"") -> bytes:
        t = type(value)
        # The commonest values, exact types only, as the encoder writes them (the same bytes,
        # tests/core/test_serialization.py): its setup cost more than a microsecond per call.
        if t is str:
            return _encode_str(value).encode("utf-8")
        if t is int or (t is float and math.isfinite(value)):
            return repr(value).encode("ascii")
        if t is bool or value is None:
            return _LITERALS[value]
        return self._encoder.encode(_encode(value)).encode("utf-8")

    def loads(self, data: bytes, *, place: bytes = b"") -> Any:
        try:
            return _decode(json.loads(data))
        except Exception as exc:  # decimal.InvalidOperation, RecursionError... on stored junk
            raise CorruptSessionData(f"unreadable JSON value: {exc}") from exc


#: An int this small has far fewer digits than ``sys.int_info.str_digits_check_threshold``.
_SAFE_INT = 1 << 256


def json_cannot_fail(value: Any, max_bytes: int | None = None) -> bool:
    """Whether :meth:`JsonSerializer.dumps` surely accepts ``value``, so a set can skip encoding
    it just to check: ``None``, a ``bool``, any ``float`` (non-finite ones are tagged), an ``int``
    below 2**256 in size, an ASCII ``str`` (no lone surrogate to refuse) that stays within
    ``max_bytes`` even if every character is escaped (``\\u0000``). Exact types only."""
    t = type(value)
    if t is int:
        return -_SAFE_INT < value < _SAFE_INT  # type: ignore[no-any-return]
    if t is str:
        return value.isascii() and (max_bytes is None or 6 * len(value) + 2 <= max_bytes)
    return value is None or t is bool or t is float


class MsgpackSerializer:
    """Compact binary encoding (needs the ``msgpack`` extra); same types as JSON."""

    name = "msgpack"

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "serializer='msgpack' needs the msgpack package: pip install sessionkeeper[msgpack]"
            ) from exc
        self._msgpack = msgpack

    def dumps(self, value: Any, *, place: bytes = b"") -> bytes:
        try:
            return bytes(self._msgpack.packb(_encode(value), use_bin_type=True))
        except (OverflowError, self._msgpack.PackException) as exc:
            raise ValueError(str(exc)) from exc

    def loads(self, data: bytes, *, place: bytes = b"") -> Any:
        try:
            return _decode(self._msgpack.unpackb(data, raw=False, strict_map_key=False))
        except Exception as exc:  # msgpack raises many unrelated types on bad input
            raise CorruptSessionData(f"unreadable msgpack value: {exc}") from exc


class SignedPickleSerializer:
    """Pickle, each value prefixed by an HMAC-SHA256 of its place and the pickled bytes.

    Only for applications that must store arbitrary objects and control who can write to the store.
    Bytes whose signature does not match, for the place they are read from, are refused before
    they are unpickled: a value signed for one session, app or key is no value of another.
    """

    name = "pickle"
    _DIGEST = 32

    def __init__(self, key: bytes | str) -> None:
        if isinstance(key, str):
            key = key.encode("utf-8")
        if len(key) < 16:
            raise ConfigurationError("the pickle signing key must be at least 16 bytes")
        self._key = key

    def _sign(self, place: bytes, payload: bytes) -> bytes:
        # The place has its length first (see place()), so it and the payload cannot be re-split.
        mac = hmac.new(self._key, len(place).to_bytes(4, "big") + place, hashlib.sha256)
        mac.update(payload)
        return mac.digest()

    def dumps(self, value: Any, *, place: bytes = b"") -> bytes:
        try:
            payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, AttributeError) as exc:
            raise TypeError(str(exc)) from exc
        return self._sign(place, payload) + payload

    def loads(self, data: bytes, *, place: bytes = b"") -> Any:
        signature, payload = data[: self._DIGEST], data[self._DIGEST :]
        if len(signature) != self._DIGEST or not hmac.compare_digest(
            signature, self._sign(place, payload)
        ):
            raise CorruptSessionData(
                "pickled value has a bad signature for its place (tampered, or copied from "
                "another session, app or key): refused"
            )
        try:
            return pickle.loads(payload)
        except Exception as exc:
            raise CorruptSessionData(f"unreadable pickled value: {exc}") from exc


def uses_place(serializer: Serializer) -> bool:
    """Whether ``serializer`` may use the ``place`` it is given: every one but the two built in
    that ignore it (exact types: a subclass may sign), for which a writer need not build it."""
    return type(serializer) not in (JsonSerializer, MsgpackSerializer)


def make_serializer(spec: str | Serializer, *, pickle_key: bytes | str | None = None) -> Serializer:
    """``"json"`` (default), ``"msgpack"``, ``"pickle"`` (needs ``pickle_key``), or an object."""
    if not isinstance(spec, str):
        return spec
    if spec == "json":
        return JsonSerializer()
    if spec == "msgpack":
        return MsgpackSerializer()
    if spec == "pickle":
        if pickle_key is None:
            raise ConfigurationError("serializer='pickle' needs pickle_key to sign values")
        return SignedPickleSerializer(pickle_key)
    raise ConfigurationError(f"unknown serializer {spec!r}: use 'json', 'msgpack' or 'pickle'")
