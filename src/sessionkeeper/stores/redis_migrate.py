"""Moving a Redis store from the layout before the index buckets to the current one.

The previous layout (up to the release before the 64 index buckets) kept a session under its own
hash tag, ``{app:token}:a|m|x``, one expiry index per app, ``idx:{app}:e|d|t``, and an owner set
per app and owner, ``own:{app:owner}``. The current one keeps a session in its bucket's slot,
``{app:bb}:token:a|m|x``, beside that bucket's index and owner sets (:mod:`.redis_lua`). A node of
the current version never reads the old keys, so without this step every session stored before
the upgrade is lost to it.

:func:`migrate` (``sessionkeeper init-db redis://... [--key-prefix P]``) moves, for each old
session, its hashes with their remaining TTL, its index entry and its owner's set, in one script
in the new slot that does nothing if the new layout already holds that id (a session or a
tombstone a running node wrote since wins); then it deletes the old keys. Old tombstones move
with their TTL, and index entries of sessions Redis already expired move too, so a sweep still
reports each of them once. It is idempotent: a second run finds nothing old. Sessions are found
with ``SCAN`` (every master of a cluster), in pages, so it never blocks the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from . import redis_lua as lua
from .redis_keys import esc

if TYPE_CHECKING:
    from .redis import RedisStore

#: KEYS a m x e d (new layout); ARGV ttl_ms, token, n, n metadata pairs, attribute pairs...
#: Returns 1 if moved, 0 if the new layout already holds the id.
MOVE = (
    lua._COMMON
    + """
local a, m, x, e, d = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('EXISTS', m) == 1 or redis.call('EXISTS', x) == 1 then return 0 end
local last = 3 + 2 * tonumber(ARGV[3])
local meta = {}
for i = 4, last, 2 do meta[ARGV[i]] = ARGV[i + 1] end
need_num(meta['v'], 'version')
local la, t = need_num(meta['l'], 'last_access'), need_num(meta['t'], 'timeout')
chunked('HSET', m, 4, last)
redis.call('PEXPIRE', m, ARGV[1])
if #ARGV > last then chunked('HSET', a, last + 1, #ARGV); redis.call('PEXPIRE', a, ARGV[1]) end
local side = meta['l'] .. '|' .. meta['t'] .. '|' .. flag(meta['o'])
index_put(e, d, ARGV[2], fmt(expiry(la, t, meta['dl'] or false)), side)
if meta['o'] then owner_add(e, meta['o'], ARGV[2], ARGV[1]) end
return 1
"""
)

PAGE = 500


@dataclass
class Moved:
    sessions: int = 0
    tombstones: int = 0
    index_entries: int = 0  # of sessions Redis had already expired

    def __str__(self) -> str:
        return (
            f"{self.sessions} sessions, {self.tombstones} tombstones, {self.index_entries} "
            "expired index entries moved from the previous layout"
        )


def _old_key(store: RedisStore, raw: bytes) -> tuple[str, str] | None:
    """``(app, token)`` of an old session key ``P{app:token}:?``, else None (a new key is
    ``P{app:bb}:token:?``: its tag is not followed by the suffix)."""
    inner = raw.decode()[len(store.key_prefix) :]
    if not inner.startswith("{") or inner[-3:-1] != "}:":
        return None
    app, sep, token = inner[1:-3].partition(":")
    return (unquote(app), unquote(token)) if sep else None


def _scan(store: RedisStore, pattern: str) -> list[bytes]:
    """Keys matching ``pattern`` after the prefix (braces are literal in a Redis glob; the
    prefix's own glob characters are escaped)."""
    prefix = "".join("\\" + c if c in "*?[]\\" else c for c in store.key_prefix)
    return list(store.client.scan_iter(match=prefix + pattern, count=PAGE))


def migrate(store: RedisStore) -> Moved:
    """Move everything of the previous layout under ``store.key_prefix`` to the current one."""
    moved = Moved()
    apps: set[str] = set()
    script = store.client.register_script(MOVE)
    for key in _scan(store, "{*}:m"):
        old = _old_key(store, key)
        if old is not None:
            apps.add(old[0])
            moved.sessions += _move_session(store, script, *old)
    for key in _scan(store, "{*}:x"):
        old = _old_key(store, key)
        if old is not None:
            apps.add(old[0])
            moved.tombstones += _move_tombstone(store, *old)
    for key in _scan(store, "idx:{*}:e"):
        app = unquote(key.decode()[len(store.key_prefix) + 5 : -3])
        apps.add(app)
        moved.index_entries += _move_index(store, app)
    for key in _scan(store, "own:{*}"):
        store.client.delete(key)  # the new owner sets were built from each session's metadata
    if apps:
        store.client.sadd(store._apps_key, *sorted(apps))
    return moved


def _old_keys(store: RedisStore, app: str, token: str) -> list[str]:
    base = f"{store.key_prefix}{{{esc(app)}:{esc(token)}}}"
    return [base + ":a", base + ":m", base + ":x"]


def _old_index(store: RedisStore, app: str) -> list[str]:
    base = f"{store.key_prefix}idx:{{{esc(app)}}}"
    return [base + ":e", base + ":d", base + ":t"]


def _move_session(store: RedisStore, script: Any, app: str, token: str) -> int:
    a, m, _ = _old_keys(store, app, token)
    pipe = store.client.pipeline(transaction=False)
    pipe.hgetall(m)
    pipe.hgetall(a)
    pipe.pttl(m)
    meta, attrs, ttl = pipe.execute()
    if not meta:
        return 0  # expired meanwhile (its index entry moves with the index)
    if ttl < 0:  # no TTL: the idle timeout plus the grace, as the store gives it
        ttl = int((float(meta.get(b"t", b"0")) + store.grace_s) * 1000)
    args: list[Any] = [str(max(1, ttl)), token, str(len(meta))]
    for name, value in meta.items():
        args += [name, value]
    for name, value in attrs.items():
        args += [name, value]
    keys = [*store._session_keys(app, token), *store._index_keys(app, token)[:2]]
    done = int(store._eval(script, keys, args))
    e, d, _ = _old_index(store, app)
    store.client.delete(a, m)
    store.client.zrem(e, token)
    store.client.hdel(d, token)
    return done


def _move_tombstone(store: RedisStore, app: str, token: str) -> int:
    x_old = _old_keys(store, app, token)[2]
    pipe = store.client.pipeline(transaction=False)
    pipe.get(x_old)
    pipe.pttl(x_old)
    until, ttl = pipe.execute()
    done = 0
    if until is not None and ttl != -2:
        x = store._session_keys(app, token)[2]
        t = store._index_keys(app, token)[2]
        px = max(1, ttl) if ttl > 0 else int(store.grace_s * 1000) or 1
        pipe = store.client.pipeline(transaction=False)  # x and t share the new slot
        pipe.set(x, until, px=px, nx=True)
        pipe.zadd(t, {token: float(until)}, nx=True)
        done = 1 if pipe.execute()[0] else 0
    store.client.delete(x_old)
    store.client.zrem(_old_index(store, app)[2], token)
    return done


def _move_index(store: RedisStore, app: str) -> int:
    """Move the entries left in an app's old index (sessions Redis expired itself): the sweep
    reports each once. Entries the new index has are kept as they are there."""
    e_old, d_old, t_old = _old_index(store, app)
    entries: Any = store.client.zrange(e_old, 0, -1, withscores=True)
    moved = 0
    for member, score in entries:
        token = member.decode()
        side = store.client.hget(d_old, member)
        e, d, _ = store._index_keys(app, token)
        pipe = store.client.pipeline(transaction=False)  # e and d share the new slot
        pipe.zadd(e, {token: score}, nx=True)
        if side is not None:
            pipe.hsetnx(d, token, side)
        moved += int(pipe.execute()[0])
    store.client.delete(e_old)
    store.client.delete(d_old)
    store.client.delete(t_old)  # tombstones moved with their keys; the rest had expired
    return moved
