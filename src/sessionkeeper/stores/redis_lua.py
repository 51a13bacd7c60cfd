"""The Lua scripts behind :class:`~sessionkeeper.stores.redis.RedisStore`.

Each script runs atomically on the server. Session keys are ``a`` (attributes hash), ``m``
(metadata hash: ``v`` version, ``c`` created, ``l`` last access, ``t`` timeout, ``o`` owner, ``n``
node) and ``x`` (tombstone string); they share one hash tag, so one cluster slot. The expiry index
of an app is ``e`` (sorted set: token -> expires_at), ``d`` (hash: token ->
``last_access|timeout|owner``, enough to report a session Redis has already expired) and ``t``
(sorted set of tombstones); they share the app's hash tag. The owner index is one set of tokens
per app and owner, under the hash tag ``{app:owner}``, with a Redis TTL at least its longest
session's. A script gets the index keys after its session keys only when all keys may be used in
one script (one server); on a cluster the store updates the indexes in separate calls.

Numbers are passed and stored as the client's strings: Lua prints numbers with 14 digits only, so a
computed number is formatted with ``%.17g``. Optional strings are flagged: ``-`` for none, ``=`` and
the value otherwise. A script validates everything it reads before its first write, because Redis
does not roll back a script that fails half way.
"""

from __future__ import annotations

_COMMON = """
local function fmt(n) return string.format('%.17g', n) end
local function corrupt(what) error({err = 'SKCORRUPT ' .. what}) end
local function need_num(raw, what)
  local n = tonumber(raw)
  if n == nil then corrupt(what .. ' is ' .. tostring(raw)) end
  return n
end
local function need_hash(key)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'hash' and t ~= 'none' then corrupt(key .. ' is a ' .. t) end
end
local function flagged(key, field)
  local v = redis.call('HGET', key, field)
  if v then return '=' .. v end
  return '-'
end
local function set_opt(key, field, value)
  if string.sub(value, 1, 1) == '=' then redis.call('HSET', key, field, string.sub(value, 2))
  else redis.call('HDEL', key, field) end
end
local function index_put(e, d, token, expires, side)
  redis.call('ZADD', e, expires, token)
  redis.call('HSET', d, token, side)
end
local function owner_add(own, token, ttl_ms)
  redis.call('SADD', own, token)
  if redis.call('PTTL', own) < tonumber(ttl_ms) then redis.call('PEXPIRE', own, ttl_ms) end
end
local function index_drop(e, d, token)
  redis.call('ZREM', e, token)
  redis.call('HDEL', d, token)
end
"""

#: KEYS a m x; ARGV -. Returns nil, or {meta pairs, attribute pairs}.
LOAD = (
    _COMMON
    + """
if redis.call('EXISTS', KEYS[3]) == 1 then return false end
local meta = redis.call('HGETALL', KEYS[2])
if #meta == 0 then return false end
return {meta, redis.call('HGETALL', KEYS[1])}
"""
)

#: KEYS a m x [e d apps [own]]; ARGV expected, created, last_access, timeout, owner, node, full,
#: nchanged, ttl_ms, token, app, changed name/value pairs..., removed names...
#: Returns {'S', version, expires, side, previous owner (flagged)} | {'C', version, meta pairs,
#: attribute pairs} | {'G'}.
SAVE = (
    _COMMON
    + """
local a, m, x = KEYS[1], KEYS[2], KEYS[3]
need_hash(a); need_hash(m)
if redis.call('EXISTS', x) == 1 then return {'G'} end
local expected = tonumber(ARGV[1])
local cur = redis.call('HGET', m, 'v')
local la = ARGV[3]
if cur == false then
  if expected ~= 0 then return {'G'} end
  cur = 0
else
  cur = need_num(cur, 'version')
  local stored_la = redis.call('HGET', m, 'l')
  local old = need_num(stored_la, 'last_access')
  if cur ~= expected then
    return {'C', cur, redis.call('HGETALL', m), redis.call('HGETALL', a)}
  end
  if old > tonumber(la) then la = stored_la end
end
if cur == 0 or ARGV[7] == '1' then redis.call('DEL', a) end
local i = 12
for _ = 1, tonumber(ARGV[8]) do
  redis.call('HSET', a, ARGV[i], ARGV[i + 1])
  i = i + 2
end
if ARGV[7] ~= '1' then
  for j = i, #ARGV do redis.call('HDEL', a, ARGV[j]) end
end
local version = cur + 1
local previous = flagged(m, 'o')
redis.call('HSET', m, 'v', version, 'l', la, 't', ARGV[4])
if cur == 0 then redis.call('HSET', m, 'c', ARGV[2]) end
set_opt(m, 'o', ARGV[5]); set_opt(m, 'n', ARGV[6])
redis.call('PEXPIRE', m, ARGV[9]); redis.call('PEXPIRE', a, ARGV[9])
local expires = fmt(tonumber(la) + tonumber(ARGV[4]))
local side = la .. '|' .. ARGV[4] .. '|' .. ARGV[5]
if #KEYS > 3 then
  index_put(KEYS[4], KEYS[5], ARGV[10], expires, side)
  redis.call('SADD', KEYS[6], ARGV[11])
end
if #KEYS > 6 then owner_add(KEYS[7], ARGV[10], ARGV[9]) end
return {'S', version, expires, side, previous}
"""
)

#: KEYS a m x [e d]; ARGV last_access, grace_ms, token. Returns nil (absent) or {expires, side}.
TOUCH = (
    _COMMON
    + """
local a, m, x = KEYS[1], KEYS[2], KEYS[3]
need_hash(m)
if redis.call('EXISTS', x) == 1 or redis.call('EXISTS', m) == 0 then return false end
local stored_la = redis.call('HGET', m, 'l')
local old = need_num(stored_la, 'last_access')
local raw_t = redis.call('HGET', m, 't')
local timeout = need_num(raw_t, 'timeout')
local la = ARGV[1]
if old >= tonumber(la) then la = stored_la else redis.call('HSET', m, 'l', la) end
local ttl = string.format('%d', math.max(1, math.floor(timeout * 1000 + tonumber(ARGV[2]))))
redis.call('PEXPIRE', m, ttl); redis.call('PEXPIRE', a, ttl)
local expires = fmt(tonumber(la) + timeout)
local side = la .. '|' .. raw_t .. '|' .. flagged(m, 'o')
if #KEYS > 3 then index_put(KEYS[4], KEYS[5], ARGV[3], expires, side) end
return {expires, side}
"""
)

#: KEYS a m x [e d t apps]; ARGV tombstone_until, grace_ms, token, app. Returns {1 if a live
#: session was there else 0, its owner (flagged)}: the store drops it from that owner's index.
DELETE = (
    _COMMON
    + """
local a, m, x = KEYS[1], KEYS[2], KEYS[3]
local live = redis.call('EXISTS', m) == 1 and redis.call('EXISTS', x) == 0
local owner = '-'
if live then owner = flagged(m, 'o') end
redis.call('DEL', a, m)
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1e6
-- Never shorter than the grace, even if the caller's clock is behind the server's.
local left_ms = math.max(0, tonumber(ARGV[1]) - now_s) * 1000
local ttl = math.max(1, math.floor(left_ms + tonumber(ARGV[2])))
redis.call('SET', x, ARGV[1], 'PX', string.format('%d', ttl))
if #KEYS > 3 then
  index_drop(KEYS[4], KEYS[5], ARGV[3])
  redis.call('ZADD', KEYS[6], ARGV[1], ARGV[3])
  redis.call('SADD', KEYS[7], ARGV[4])
end
if live then return {1, owner} end
return {0, owner}
"""
)

#: KEYS e d; ARGV op ('put' expires side | 'drop' | 'tomb' until), token. Cluster only: the index
#: half of SAVE, TOUCH and DELETE, in the index's own slot (for 'tomb', KEYS e d t).
INDEX = (
    _COMMON
    + """
local op, token = ARGV[1], ARGV[2]
if op == 'put' then index_put(KEYS[1], KEYS[2], token, ARGV[3], ARGV[4])
elseif op == 'drop' then index_drop(KEYS[1], KEYS[2], token)
else
  index_drop(KEYS[1], KEYS[2], token)
  redis.call('ZADD', KEYS[3], ARGV[3], token)
end
return 1
"""
)

#: KEYS own; ARGV token, ttl_ms. Cluster only: the owner index half of SAVE, in the owner set's
#: own slot.
OWNER = (
    _COMMON
    + """
owner_add(KEYS[1], ARGV[1], ARGV[2])
return 1
"""
)

#: Claim one expired session and delete it. ARGV before, token. Three forms:
#: KEYS e d a m x (one server: claim and delete in one step), returns nil or side;
#: KEYS e d (cluster, index slot: claim), returns nil or side;
#: KEYS a m x (cluster, session slot: delete if still expired), returns {'D', side} deleted,
#: {'E'} already expired by Redis, {'T'} tombstoned, {'A', expires, side} alive after all.
SWEEP = (
    _COMMON
    + """
local before = tonumber(ARGV[1])
local token = ARGV[2]
local function claim(e, d)
  local score = redis.call('ZSCORE', e, token)
  if not score or tonumber(score) >= before then return false end
  local side = redis.call('HGET', d, token)
  index_drop(e, d, token)
  return side or ''
end
local function finish(a, m, x)
  if redis.call('EXISTS', x) == 1 then return {'T'} end
  if redis.call('TYPE', m)['ok'] ~= 'hash' then
    redis.call('DEL', a, m)
    return {'E'}
  end
  local la, t = redis.call('HGET', m, 'l'), redis.call('HGET', m, 't')
  local side = tostring(la) .. '|' .. tostring(t) .. '|' .. flagged(m, 'o')
  if tonumber(la) and tonumber(t) and tonumber(la) + tonumber(t) >= before then
    return {'A', fmt(tonumber(la) + tonumber(t)), side}
  end
  redis.call('DEL', a, m)
  if tonumber(la) and tonumber(t) then return {'D', side} end
  return {'E'}
end
if #KEYS == 2 then return claim(KEYS[1], KEYS[2]) end
if #KEYS == 3 then return finish(KEYS[1], KEYS[2], KEYS[3]) end
local side = claim(KEYS[1], KEYS[2])
if not side then return false end
local r = finish(KEYS[3], KEYS[4], KEYS[5])
if r[1] == 'D' then return r[2] end
if r[1] == 'E' then return side end
if r[1] == 'A' then index_put(KEYS[1], KEYS[2], token, r[2], r[3]) end
return false
"""
)
