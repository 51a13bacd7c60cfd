"""The Redis layout migration (``sessionkeeper init-db redis://... --key-prefix P``): sessions,
tombstones and index entries written in the layout before the 64 index buckets (keys under
``{app:token}``, one index per app under ``idx:{app}``, owner sets ``own:{app:owner}``) are found
after it. The old layout is written here with raw commands, as the old scripts left it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

redis = pytest.importorskip("redis")

from sessionkeeper import cli  # noqa: E402
from sessionkeeper.stores import SaveStatus  # noqa: E402
from sessionkeeper.stores.redis import RedisStore  # noqa: E402

from .contract import req, tok  # noqa: E402


def old_session(
    raw: Any, p: str, app: str, token: str, *, n: int, owner: str | None = None, la: float
) -> None:
    """One session as the old SAVE script stored it, with its old index entry."""
    base = f"{p}{{{quote(app, safe='')}:{quote(token, safe='')}}}"
    meta = {"v": 2, "c": repr(la - 10), "l": repr(la), "t": "1800.0", "n": "a"}
    if owner is not None:
        meta["o"] = owner
        raw.sadd(f"{p}own:{{{app}:{owner}}}", token)
    raw.hset(base + ":m", mapping=meta)
    raw.hset(base + ":a", mapping={"n": str(n).encode()})
    raw.pexpire(base + ":m", 1_800_000)
    raw.pexpire(base + ":a", 1_800_000)
    raw.zadd(f"{p}idx:{{{app}}}:e", {token: la + 1800})
    raw.hset(f"{p}idx:{{{app}}}:d", token, f"{la!r}|1800.0|{'-' if owner is None else '=' + owner}")
    raw.sadd(f"{p}apps", app)


def old_tombstone(raw: Any, p: str, app: str, token: str, until: float) -> None:
    raw.set(f"{p}{{{app}:{token}}}:x", repr(until), px=600_000)
    raw.zadd(f"{p}idx:{{{app}}}:t", {token: until})


def migrate(url: str, p: str, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(["init-db", url, "--key-prefix", p]) == 0
    return capsys.readouterr().out


def test_sessions_in_the_old_layout_are_found_after_the_migration(
    redis_url: str, prefix: str, raw: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    store = RedisStore(redis_url, key_prefix=prefix)
    try:
        check_migration(store, raw, lambda: migrate(redis_url, prefix, capsys))
    finally:
        store.close()


def check_migration(store: RedisStore, raw: Any, run: Callable[[], str]) -> None:
    """Old sessions (two with an owner, two apps), a tombstone and an expired index entry are
    all found in the new layout after ``run()``; nothing old is left; a second run moves none."""
    prefix, now = store.key_prefix, time.time()
    for i in range(1, 6):
        old_session(raw, prefix, "shop", tok(i), n=i, owner="ann" if i <= 2 else None, la=now)
    old_session(raw, prefix, "bank", tok(9), n=9, la=now)
    old_tombstone(raw, prefix, "shop", tok(7), now + 300)
    # Index entry of a session Redis already expired itself: still reported by a sweep, once.
    raw.zadd(f"{prefix}idx:{{shop}}:e", {tok(8): now - 5000})
    raw.hset(f"{prefix}idx:{{shop}}:d", tok(8), f"{now - 6800!r}|1800.0|-")

    assert store.load("shop", tok(1)) is None  # the upgrade's problem
    assert "6 sessions, 1 tombstones, 1 expired index entries" in run()
    for i in range(1, 6):
        s = store.load("shop", tok(i))
        assert s is not None and s.attributes == {"n": str(i).encode()} and s.version == 2
    assert store.load("bank", tok(9)) is not None
    assert [s.token for s in store.sessions_of("shop", "ann")] == [tok(1), tok(2)]
    assert store.count("shop", now=now) == 5 and store.count("bank", now=now) == 1
    # The tombstone still refuses the old id.
    assert store.save_many([req(tok(7), 0, {"a": b"1"})])[0].status is SaveStatus.GONE
    expired = store.delete_expired(before=now)
    assert [(e.app, e.token) for e in expired] == [("shop", tok(8))]
    # Nothing of the old layout is left, and a second run changes nothing.
    assert list(raw.scan_iter(match=f"{prefix}idx:*")) == []
    assert list(raw.scan_iter(match=f"{prefix}own:*")) == []
    assert list(raw.scan_iter(match=f"{prefix}{{*}}:[amx]")) == []
    assert "0 sessions, 0 tombstones, 0 expired" in run()
    assert store.load("shop", tok(3)) is not None


def test_a_session_a_running_node_wrote_in_the_new_layout_is_kept(
    redis_url: str, prefix: str, raw: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Safe while nodes run: a node that wrote the id in the new layout since (or a tombstone
    there) wins over the old copy."""
    now = time.time()
    old_session(raw, prefix, "shop", tok(1), n=1, la=now)
    old_session(raw, prefix, "shop", tok(2), n=2, la=now)
    store = RedisStore(redis_url, key_prefix=prefix)
    try:
        store.save_many([req(tok(1), 0, {"n": b"100"}, last_access_at=now)])
        store.save_many([req(tok(2), 0, {"n": b"200"}, last_access_at=now)])
        store.delete("shop", tok(2), tombstone_until=now + 300)
        assert "0 sessions" in migrate(redis_url, prefix, capsys)
        s = store.load("shop", tok(1))
        assert s is not None and s.attributes == {"n": b"100"} and s.version == 1
        assert store.load("shop", tok(2)) is None
    finally:
        store.close()
