"""The Lua scripts behind :class:`~sessionkeeper.stores.redis.RedisStore`.

Each script runs atomically on the server, and every key it gets lives in one hash slot, so each
also runs as one call on Redis Cluster. Session keys are ``a`` (attributes hash), ``m`` (metadata
hash: ``v`` version, ``c`` created, ``l`` last access, ``t`` timeout, ``o`` owner, ``n`` node,
``dl`` the absolute deadline, if any) and ``x`` (tombstone string). A session's index score is
``min(last access + timeout, deadline)``. The expiry index is split into buckets per app; a session's bucket keys
share the session's hash tag: ``e`` (sorted set: token -> expires_at), ``d`` (hash: token ->
``last_access|timeout|owner``, enough to report a session Redis has already expired) and ``t``
(sorted set of tombstones). The owner index (logout everywhere) is a set of tokens per bucket and
owner, ``own:<owner>:o`` under the same hash tag (see :mod:`.redis_owners`): a script names it from
its ``e`` key and the owner in the metadata, so it stays in the session's slot (the ``:o`` suffix
keeps it apart from every session key, whatever the owner and the token are).

Numbers are passed and stored as the client's strings: Lua prints numbers with 14 digits only, so a
computed number is formatted with ``%.17g``. Optional strings are flagged: ``-`` for none, ``=`` and
the value otherwise. A script validates everything it reads before its first write, because Redis
does not roll back a script that fails half way; a command on a key of the wrong type is such a
check too (``HMGET`` of metadata that is not a hash fails before anything is written). Each
script runs as few commands as it can: every ``redis.call`` is work the server does per request.
The calls are built and the replies decoded here too (:func:`save_call`, :func:`save_result`,
:func:`snapshot`, :func:`expired`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..errors import CorruptSessionData
from ..logs import fields, session_hash
from .base import ExpiredSession, SaveRequest, SaveResult, SaveStatus, StoredSession
from .redis_connect import Call

log = logging.getLogger("sessionkeeper.store.redis")

#: The scripts' shared Lua, in parts: a script begins with only the parts it uses (:func:`_lua`),
#: since each part's functions are made anew on every run, and the server pays for that per call.
_PARTS = {
    "fmt": "local function fmt(n) return string.format('%.17g', n) end\n",
    "need_num": """
local function corrupt(what) error({err = 'SKCORRUPT ' .. what}) end
local function need_num(raw, what)
  local n = tonumber(raw)
  if n == nil then corrupt(what .. ' is ' .. tostring(raw)) end
  return n
end
""",
    "flag": "local function flag(v) if v then return '=' .. v end return '-' end\n",
    "chunked": """
-- One command per chunk: unpack() of a very large argument list would overflow Lua's stack.
local function chunked(cmd, key, first, last)
  local i = first
  while i <= last do
    local j = math.min(last, i + 999)
    redis.call(cmd, key, unpack(ARGV, i, j))
    i = j + 1
  end
end
""",
    "index": """
local function index_put(e, d, token, expires, side)
  redis.call('ZADD', e, expires, token)
  redis.call('HSET', d, token, side)
end
local function index_drop(e, d, token)
  redis.call('ZREM', e, token)
  redis.call('HDEL', d, token)
end
""",
    "owners": """
-- The owner's set in the bucket whose expiry index is e (same hash tag, so the same slot).
local function own_key(e, owner) return string.sub(e, 1, -2) .. 'own:' .. owner .. ':o' end
-- Its TTL is never shorter than that of any session in it: GT raises a TTL, never lowers it;
-- a set without one (just created) reads as endless to GT, and gets one after PTTL says so.
local function owner_add(e, owner, token, ttl_ms)
  local own = own_key(e, owner)
  redis.call('SADD', own, token)
  if redis.call('PEXPIRE', own, ttl_ms, 'GT') == 0 and redis.call('PTTL', own) == -1 then
    redis.call('PEXPIRE', own, ttl_ms)
  end
end
local function owner_drop(e, owner, token)
  if owner then redis.call('SREM', own_key(e, owner), token) end
end
-- The owner in a side entry (la|timeout|flagged owner), or nil.
local function side_owner(side) return string.match(side, '^[^|]*|[^|]*|=(.*)$') end
""",
    "expiry": """
-- When a session expires: idle expiry, or its deadline (dl, false when none) if that is earlier.
local function expiry(la, t, dl)
  local x = la + t
  if dl then
    local deadline = need_num(dl, 'deadline')
    if deadline < x then x = deadline end
  end
  return x
end
""",
    "session_reply": """
-- A stored session as LOAD and a conflicting SAVE reply it: {'v c l t dl', owner, node, attribute
-- pairs...}, flat, so the client parses few elements; nil when m holds none of these fields.
local function session_reply(m, a)
  local f = redis.call('HMGET', m, 'v', 'c', 'l', 't', 'dl', 'o', 'n')
  local any = false
  for i = 1, 7 do any = any or f[i] end
  if not any then return nil end
  local out = {(f[1] or '') .. ' ' .. (f[2] or '') .. ' ' .. (f[3] or '') .. ' ' .. (f[4] or '')
    .. ' ' .. (f[5] or ''), f[6], f[7]}
  local attrs = redis.call('HGETALL', a)
  for i = 1, #attrs do out[i + 3] = attrs[i] end
  return out
end
""",
}


def _lua(parts: str, body: str) -> str:
    """A script: the named parts of the shared Lua (space-separated), then ``body``."""
    return "".join(_PARTS[p] for p in parts.split()) + body


#: Every part, for a script that may use any (:mod:`.redis_migrate`).
_COMMON = _lua(" ".join(_PARTS), "")

#: KEYS a m x; ARGV -. Returns nil, or the session (``session_reply``: :func:`snapshot`).
LOAD = _lua(
    "session_reply",
    """
if redis.call('EXISTS', KEYS[3]) == 1 then return false end
return session_reply(KEYS[2], KEYS[1]) or false
""",
)

#: KEYS a m x e d; ARGV expected version, created (``-`` unless expected
#: is 0), last_access, timeout, full (1/0), last (the ARGV index of the last changed value), ttl_ms
#: (min(timeout, deadline - last_access) + grace), fence (the server's epoch time after which the
#: write must not begin: stores/fence.py), deadline (``-`` for none), owner (flagged), node
#: (flagged), token, expires (min(last_access + timeout, deadline), as the client computed it),
#: then changed name/value pairs..., removed names... Built by :func:`save_call`: one argument per
#: value, so the script parses no string, formats no number on an update (``expires`` and the side
#: entry are the client's strings unless a later stored last access replaces the client's), and
#: builds no table beyond the metadata fields.
#: Returns the new version (> 0) | 0: gone | -1: begun after the fence (nothing written, nothing
#: read) | the stored session (``session_reply``) on a version conflict. :func:`save_result`.
#: An update runs 9 commands: TIME, EXISTS, HMGET, HSET a, HSET m, 2 PEXPIRE, ZADD, HSET d; with an
#: owner, SADD and PEXPIRE GT of its set (PTTL too when GT did not raise it), and SREM from the
#: previous owner's set when the owner changed.
SAVE = _lua(
    "fmt need_num chunked owners session_reply",
    """
local a, m, x = KEYS[1], KEYS[2], KEYS[3]
-- TIME is the script's execution (Redis 7 replicates a script's effects, so it may read it).
local now = redis.call('TIME')
if now[1] + now[2] / 1000000 > tonumber(ARGV[8]) then return -1 end
if redis.call('EXISTS', x) == 1 then return 0 end
local meta = redis.call('HMGET', m, 'v', 'l', 'o', 'n', 'dl')
local cur, la = meta[1], ARGV[3]
if cur == false then
  if ARGV[1] ~= '0' then return 0 end
  cur = 0
else
  cur = need_num(cur, 'version')
  local old = need_num(meta[2], 'last_access')
  if cur ~= tonumber(ARGV[1]) then return session_reply(m, a) end
  if old > tonumber(la) then la = meta[2] end
end
local full, last = ARGV[5] == '1', tonumber(ARGV[6])
-- The first write to a: on a key of another type it fails before anything else is written.
if cur == 0 or full then redis.call('DEL', a) end
chunked('HSET', a, 14, last)
if not full and #ARGV > last then chunked('HDEL', a, last + 1, #ARGV) end
local version = cur + 1
local f = {'v', version, 'l', la, 't', ARGV[4]}
if cur == 0 then f[7] = 'c'; f[8] = ARGV[2] end
local drop = nil
-- An optional field: written when it changed, dropped when it is gone.
local function put(name, value, stored)
  if value then
    if value ~= stored then f[#f + 1] = name; f[#f + 1] = value end
  elseif stored then
    drop = drop or {}
    drop[#drop + 1] = name
  end
end
local o, dl = ARGV[10], ARGV[9]
local owner = o ~= '-' and string.sub(o, 2) or nil
put('o', owner, meta[3])
put('n', ARGV[11] ~= '-' and string.sub(ARGV[11], 2) or nil, meta[4])
put('dl', dl ~= '-' and dl or nil, meta[5])
redis.call('HSET', m, unpack(f))
if drop then redis.call('HDEL', m, unpack(drop)) end
local ttl, token, e = ARGV[7], ARGV[12], KEYS[4]
redis.call('PEXPIRE', m, ttl); redis.call('PEXPIRE', a, ttl)
local expires = ARGV[13]
if la ~= ARGV[3] then  -- a later last access was stored: the expiry is computed from it
  local x = tonumber(la) + tonumber(ARGV[4])
  if dl ~= '-' and tonumber(dl) < x then x = tonumber(dl) end
  expires = fmt(x)
end
redis.call('ZADD', e, expires, token)
redis.call('HSET', KEYS[5], token, la .. '|' .. ARGV[4] .. '|' .. o)
if meta[3] and meta[3] ~= owner then owner_drop(e, meta[3], token) end
if owner then owner_add(e, owner, token, ttl) end
return version
""",
)

#: KEYS a m x e d; ARGV last_access, grace_ms, token. Returns 1 if the session was there, else 0.
TOUCH = _lua(
    "fmt need_num flag index owners expiry",
    """
local a, m, x, e, d = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if redis.call('EXISTS', x) == 1 then return 0 end
local meta = redis.call('HMGET', m, 'l', 't', 'o', 'dl')
if not meta[1] and not meta[2] and not meta[3] then return 0 end
local old = need_num(meta[1], 'last_access')
local timeout = need_num(meta[2], 'timeout')
local la = ARGV[1]
if old >= tonumber(la) then la = meta[1] else redis.call('HSET', m, 'l', la) end
-- The keys live until the session expires (idle, or its deadline if earlier), plus the grace.
local expires = expiry(tonumber(la), timeout, meta[4])
local ttl = string.format('%d', math.max(1, math.floor((expires - tonumber(la)) * 1000 + tonumber(ARGV[2]))))
redis.call('PEXPIRE', m, ttl); redis.call('PEXPIRE', a, ttl)
index_put(e, d, ARGV[3], fmt(expires), la .. '|' .. meta[2] .. '|' .. flag(meta[3]))
-- The session now lives longer: so must its owner's set (and a session written before the
-- index existed, or whose set a failover lost, joins it).
if meta[3] then owner_add(e, meta[3], ARGV[3], ttl) end
return 1
""",
)

#: KEYS a m x e d t; ARGV tombstone_until, grace_ms, token. Returns 1 if a live session was there.
DELETE = _lua(
    "index owners",
    """
local a, m, x = KEYS[1], KEYS[2], KEYS[3]
local live = redis.call('EXISTS', m) == 1 and redis.call('EXISTS', x) == 0
-- pcall: metadata of another type is deleted all the same, it has no owner to read.
local owner = live and redis.pcall('HGET', m, 'o')
redis.call('DEL', a, m)
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1e6
-- Never shorter than the grace, even if the caller's clock is behind the server's.
local left_ms = math.max(0, tonumber(ARGV[1]) - now_s) * 1000
local ttl = math.max(1, math.floor(left_ms + tonumber(ARGV[2])))
redis.call('SET', x, ARGV[1], 'PX', string.format('%d', ttl))
index_drop(KEYS[4], KEYS[5], ARGV[3])
if type(owner) == 'string' then owner_drop(KEYS[4], owner, ARGV[3]) end
redis.call('ZADD', KEYS[6], ARGV[1], ARGV[3])
if live then return 1 end
return 0
""",
)

#: Claim one expired session and delete it. KEYS e d a m x; ARGV before, token. Returns its side
#: (``last_access|timeout|owner``) when this call deleted an expired session, else nil. Only the
#: caller whose ZREM removed the index entry goes on; a session found alive after all (its entry
#: was stale) is not deleted and is indexed again from its own metadata. A deleted session leaves
#: its owner's set in the same call.
SWEEP = _lua(
    "fmt need_num flag index owners expiry",
    """
local e, d, a, m, x = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local before, token = tonumber(ARGV[1]), ARGV[2]
local score = redis.call('ZSCORE', e, token)
if not score or tonumber(score) >= before then return false end
local side = redis.call('HGET', d, token) or ''
index_drop(e, d, token)
if redis.call('EXISTS', x) == 1 then return false end
if redis.call('TYPE', m)['ok'] ~= 'hash' then
  redis.call('DEL', a, m)
  owner_drop(e, side_owner(side), token)
  return side
end
local meta = redis.call('HMGET', m, 'l', 't', 'o', 'dl')
local la, t = tonumber(meta[1]), tonumber(meta[2])
local dl = tonumber(meta[4] or '')  -- an unreadable deadline does not keep a session alive
if dl == nil then dl = false end
if la and t and expiry(la, t, dl) >= before then
  index_put(e, d, token, fmt(expiry(la, t, dl)), meta[1] .. '|' .. meta[2] .. '|' .. flag(meta[3]))
  return false
end
redis.call('DEL', a, m)
owner_drop(e, meta[3] or side_owner(side), token)
if la and t then return meta[1] .. '|' .. meta[2] .. '|' .. flag(meta[3]) end
return side
""",
)


# -- the calls and their replies ---------------------------------------------------------------


def _flag(value: str | None) -> str:
    return "-" if value is None else "=" + value


def ttl_ms(r: SaveRequest, grace_s: float) -> int:
    """The keys' TTL: until the session expires, min(idle expiry, deadline), plus the grace
    (as the TOUCH script computes it)."""
    life_s = r.timeout_s
    if r.absolute_expires_at is not None:
        life_s = min(life_s, r.absolute_expires_at - r.last_access_at)
    return max(1, int((life_s + grace_s) * 1000))


def save_call(
    keys: list[bytes], r: SaveRequest, fence: float, grace_s: float, codec: tuple[str, str]
) -> Call:
    """SAVE's arguments for ``keys`` (``a m x e d``), as bytes in the client's ``codec``
    (encoding, errors): redis-py's encoder would test each one's type in Python. Numbers are
    ASCII (``%r`` of a float is its ``repr``, which reads back as the same float). The creation
    time is read only by a creation (expected version 0): ``-`` otherwise."""
    encoding, errors = codec
    dl = r.absolute_expires_at
    args = [
        b"%d" % r.expected_version,
        b"%r" % r.created_at if r.expected_version == 0 else b"-",
        b"%r" % r.last_access_at,
        b"%r" % r.timeout_s,
        b"1" if r.full else b"0",
        b"%d" % (13 + 2 * len(r.changed)),
        b"%d" % ttl_ms(r, grace_s),
        b"%r" % fence,
        b"-" if dl is None else b"%r" % dl,
        _flag(r.owner).encode(encoding, errors),
        _flag(r.node).encode(encoding, errors),
        r.token.encode(encoding, errors),
        b"%r" % r.expires_at,
    ]
    for name, value in r.changed.items():
        args += [name.encode(encoding, errors), bytes(value)]
    args += [name.encode(encoding, errors) for name in sorted(r.removed)]
    return keys, args


def save_result(r: SaveRequest, reply: Any) -> SaveResult:
    """What SAVE's reply means: a new version, 0 (gone), -1 (fenced) or the stored session."""
    if isinstance(reply, int):
        if reply > 0:
            return SaveResult(SaveStatus.SAVED, reply)
        return SaveResult(SaveStatus.GONE if reply == 0 else SaveStatus.FENCED)
    current = snapshot(r.app, r.token, reply)
    return SaveResult(SaveStatus.CONFLICT, current.version, current)


def snapshot(app: str, token: str, reply: Sequence[Any]) -> StoredSession:
    """A session from the reply of ``session_reply`` (LOAD, a conflicting SAVE): ``b'v c l t dl'``
    (``dl`` empty for none), the owner, the node, then attribute name/value pairs."""
    try:
        head, owner, node = reply[0], reply[1], reply[2]
        if head is None:
            raise ValueError("no metadata")
        v, c, la, t, dl = head.split(b" ")
        attributes = {
            name.decode(): value for name, value in zip(reply[3::2], reply[4::2], strict=True)
        }
        return StoredSession(
            app=app,
            token=token,
            attributes=attributes,
            version=int(v),
            created_at=float(c),
            last_access_at=float(la),
            timeout_s=float(t),
            owner=owner.decode() if owner is not None else None,
            node=node.decode() if node is not None else None,
            absolute_expires_at=float(dl) if dl else None,
        )
    except ValueError as exc:  # UnicodeDecodeError is a ValueError
        raise CorruptSessionData(
            f"redis: session {app}/{session_hash(app, token)} has unreadable metadata: {exc!r}"
        ) from exc


def expired(app: str, token: str, side: bytes | str) -> ExpiredSession | None:
    """The expired session a side entry (``last_access|timeout|owner``) describes, or None (and a
    warning) when it is unreadable."""
    raw = side.decode() if isinstance(side, bytes) else side
    try:
        la, timeout, owner = raw.split("|", 2)
        return ExpiredSession(
            app, token, float(la), float(timeout), None if owner.startswith("-") else owner[1:]
        )
    except ValueError:
        log.warning(
            "redis: expired session %s/%s had no readable index entry; deleted without an event",
            app,
            session_hash(app, token),
            extra=fields(app, token),
        )
        return None
