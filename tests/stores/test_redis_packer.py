"""``BytesPacker``: the same bytes on the wire as redis-py's own packer, for every command."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("redis")

from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

from sessionkeeper.stores.redis_connect import BytesPacker, connect

COMMANDS: list[tuple[Any, ...]] = [
    ("EVALSHA", b"ab" * 20, b"2", b"k1", b"k2", b"", b"\r\n$3\r\n", b"x" * 70_000),
    (b"EVALSHA", b"sha", b"0"),
    ("PING",),
    ("SET", "key", 1, 2.5, b"v"),  # not all bytes: redis-py's packer
    ("SCRIPT LOAD", b"return 1"),  # a two-word name, split by redis-py
    (b"CONFIG GET", b"maxmemory"),
    ("GET", memoryview(b"key")),
    ("SET", "k\u00e9y", "v\u00e4lue"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: repr(c[0]))
def test_packs_what_redis_py_packs(command: tuple[Any, ...]) -> None:
    theirs = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)
    ours = BytesPacker(PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode))
    assert b"".join(ours.pack(*command)) == b"".join(bytes(p) for p in theirs.pack(*command))


def test_a_client_built_from_a_url_packs_bytes_quickly() -> None:
    client = connect("redis://127.0.0.1:6379/0?encoding=latin-1", 1.0).client
    packer = client.connection_pool.connection_kwargs["command_packer"]
    assert isinstance(packer, BytesPacker)
    # the fallback encodes as the client does
    assert (
        b"".join(packer.pack("SET", "k", "\u00e9"))
        == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n\xe9\r\n"
    )
    client.close()
