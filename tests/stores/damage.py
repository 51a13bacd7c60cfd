"""Ways to damage a session stored in Redis, shared by the store tests and the end-to-end tests."""

from __future__ import annotations

from typing import Any

REDIS_DAMAGE = ["version", "missing_field", "meta_wrong_type", "attrs_wrong_type", "bad_name",
                "garbage_value"]  # fmt: skip


def damage_redis_session(store: Any, app: str, token: str, damage: str) -> None:
    """Break one stored session of a ``RedisStore`` in the way ``damage`` names."""
    a, m, _ = store._session_keys(app, token)
    raw = store.client
    if damage == "version":
        raw.hset(m, "v", "garbage")
    elif damage == "missing_field":
        raw.hdel(m, "c")
    elif damage == "meta_wrong_type":
        raw.delete(m)
        raw.set(m, "not a hash")
    elif damage == "attrs_wrong_type":
        raw.delete(a)
        raw.rpush(a, "x")
    elif damage == "bad_name":
        raw.hset(a, b"\xff\xfe", b"1")
    elif damage == "garbage_value":
        raw.hset(a, "n", b"\xff\x00{")
    else:
        raise ValueError(f"unknown damage {damage!r}")
