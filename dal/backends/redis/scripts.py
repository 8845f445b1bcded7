"""The Lua scripts the Redis stores run: each evaluates atomically on the server.

Sent with EVALSHA (redis-py's ``Script`` hashes the source once; the Redis stores call it through
``RedisClient._script``); a server that answers NOSCRIPT (restarted, or ``SCRIPT FLUSH``) gets the
source with ``SCRIPT LOAD`` and the call is sent again, so a script is loaded once per server and
never re-sent in full per call.

Written for Redis's Lua 5.1 (``unpack``), and for Lua 5.4 where fakeredis runs them (``table.unpack``).
Revisions are Lua numbers: exact up to 2^53, more commits than any store will see.
"""

from __future__ import annotations

#: the helpers every data script shares: a stored value's revision and the bounds of a prefix
_COMMON = r"""
local unpack = unpack or table.unpack
-- the first key found holding a value another client wrote without dal's stamp (revision -1)
local unstamped
local function revision_of(raw, key)
  if not raw then return 0 end
  local revision = tonumber(string.match(raw, '^(%d+):'))
  if not revision then
    unstamped = unstamped or key
    return -1
  end
  return revision
end
local function bounds(prefix)
  -- no UTF-8 text holds the byte 0xFF, so prefix .. 0xFF is above every key under prefix
  if prefix == '' then return '-', '+' end
  return '[' .. prefix, '(' .. prefix .. '\255'
end
local function data_keys(data, keys)
  local names = {}
  for i, key in ipairs(keys) do names[i] = data .. key end
  return names
end
"""

#: commit: KEYS = counter, index, identity; ARGV = data prefix, page, the store's name as the client
#: read it (see ``RedisStore.identity``; empty: not read yet), number of checks, number of writes, then two
#: per check (its kind R/E/P/U followed by its key or prefix, in one; then a revision), then two per
#: write (its kind P/D/X followed by its key or prefix; then the value, empty for D and X), then the
#: whole Redis key of each cache entry to delete (Evict), one argument each.
#: Returns {1, revision} once applied, or {0, failed check indexes, {key, raw, ...}} having written nothing,
#: or {3, key} having written nothing when a check read a value of that key without dal's stamp,
#: or {2, the name stored now} having written nothing when the store's name is not the client's: the
#: database lost its data (FLUSHDB, a restart without persistence) since the client read it, and the
#: cache keys the client derives from that name are no longer the other clients'.
#: As few arguments as that, since each one costs the client (redis-py packs it) and the server (a Lua
#: string) more than the script's work on it: a save's commit went from 63 to 30 (31 with the store's name).
COMMIT = _COMMON + r"""
local counter, index = KEYS[1], KEYS[2]
local data, page = ARGV[1], tonumber(ARGV[2])
if ARGV[3] ~= '' then
  local named = redis.call('GET', KEYS[3])
  if named ~= ARGV[3] then return {2, named or ''} end
end
local checks, writes = tonumber(ARGV[4]), tonumber(ARGV[5])

-- the highest revision under prefix, or the first one found above `above` (enough to fail the check)
local function newest(prefix, above)
  local low, high = bounds(prefix)
  local best = 0
  while true do
    local keys = redis.call('ZRANGEBYLEX', index, low, high, 'LIMIT', 0, page)
    if #keys == 0 then return best end
    for i, raw in ipairs(redis.call('MGET', unpack(data_keys(data, keys)))) do
      local revision = revision_of(raw, keys[i])
      if revision > best then best = revision end
    end
    if best > above or #keys < page then return best end
    low = '(' .. keys[#keys]
  end
end

local failed, current = {}, {}
for i = 0, checks - 1 do
  local at = 6 + 2 * i
  local kind, name, revision = string.sub(ARGV[at], 1, 1), string.sub(ARGV[at], 2), tonumber(ARGV[at + 1])
  local holds
  if kind == 'R' or kind == 'E' then
    local raw = redis.call('GET', data .. name)
    if kind == 'E' then holds = raw ~= false else holds = revision_of(raw, name) == revision end
    if not holds and raw then
      current[#current + 1] = name
      current[#current + 1] = raw
    end
  elseif kind == 'P' then
    local low, high = bounds(name)
    holds = #redis.call('ZRANGEBYLEX', index, low, high, 'LIMIT', 0, 1) == 0
  else
    holds = newest(name, revision) <= revision
  end
  if not holds then failed[#failed + 1] = i end
end
if unstamped then return {3, unstamped} end
if #failed > 0 then return {0, failed, current} end

-- every check holds: nothing below can fail on keys only this store writes
local revision = redis.call('INCR', counter)
local stamp = string.format('%d', revision) .. ':'
local first = 6 + 2 * checks
for at = first, first + 2 * writes - 1, 2 do
  local kind, name = string.sub(ARGV[at], 1, 1), string.sub(ARGV[at], 2)
  if kind == 'P' then
    redis.call('SET', data .. name, stamp .. ARGV[at + 1])
    redis.call('ZADD', index, '0', name)
  elseif kind == 'D' then
    redis.call('DEL', data .. name)
    redis.call('ZREM', index, name)
  else
    local low, high = bounds(name)
    while true do  -- a page at a time: each batch deleted is gone from the next ZRANGEBYLEX
      local keys = redis.call('ZRANGEBYLEX', index, low, high, 'LIMIT', 0, page)
      if #keys == 0 then break end
      redis.call('DEL', unpack(data_keys(data, keys)))
      redis.call('ZREM', index, unpack(keys))
    end
  end
end
-- the cache entries to evict, whole Redis keys taken as sent: a page per DEL
for at = first + 2 * writes, #ARGV, page do
  redis.call('DEL', unpack(ARGV, at, math.min(at + page - 1, #ARGV)))
end
return {1, revision}
"""

#: scan: KEYS = index; ARGV = data prefix, page, low bound, high bound, limit (0: no limit).
#: Returns {key, raw, key, raw, ...} in key order, read page by page inside one script: one instant.
SCAN = _COMMON + r"""
local index = KEYS[1]
local data, page, low, high, limit = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
local found, count = {}, 0
while limit == 0 or count < limit do
  local size = page
  if limit > 0 and limit - count < size then size = limit - count end
  local keys = redis.call('ZRANGEBYLEX', index, low, high, 'LIMIT', 0, size)
  if #keys == 0 then break end
  local values = redis.call('MGET', unpack(data_keys(data, keys)))
  for i, key in ipairs(keys) do
    found[#found + 1] = key
    found[#found + 1] = values[i]
  end
  count = count + #keys
  if #keys < size then break end
  low = '(' .. keys[#keys]
end
return found
"""

#: acquire: KEYS = the role's key; ARGV = the owner and a NUL, a fresh lease (the owner stamped with a new
#: token: dal.backends.leadership.stamped), milliseconds. Taken when nobody holds it (Redis expired an
#: unrenewed one), or renewed with its token kept when its owner asks again (the owner, a NUL and 16
#: digits: an older release's lease holds the owner alone). Returns {1 or 0, the stored lease}.
ACQUIRE = r"""
local held = redis.call('GET', KEYS[1])
if held then
  if #held ~= #ARGV[1] + 16 or string.sub(held, 1, #ARGV[1]) ~= ARGV[1] then return {0, held} end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, held}
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return {1, ARGV[2]}
"""

#: renew: KEYS = the role's key; ARGV = the stamped lease, milliseconds. 1 when still that lease, and
#: extended.
RENEW = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

#: release: KEYS = the role's key; ARGV = the stamped lease. Deletes it only while it is that lease.
RELEASE = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: cas: KEYS = the cache key; ARGV = the stamp gets returned, the new stamped value, milliseconds
#: (0: no expiry; -1: expired at once, so a conditional delete). Stores only while the stored value
#: still begins with that stamp. Returns 1 or 0.
CAS = r"""
local raw = redis.call('GET', KEYS[1])
if not raw or string.sub(raw, 1, #ARGV[1]) ~= ARGV[1] then return 0 end
if ARGV[3] == '-1' then
  redis.call('DEL', KEYS[1])
elseif ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""

#: MGET that also counts a hit of each present key (KEYS: the n keys, then their n counters); an
#: MGET per 1000 keys, since Lua's ``unpack`` takes a few thousand values at most. The counters are
#: written with ``pcall``: a server at its maxmemory (noeviction) refuses the script's first write,
#: and a hit it cannot count is still a hit, never a failed read (an error reply is a table, never 1)
COUNTED_GET = """
local unpack = unpack or table.unpack
local n = #KEYS / 2
local values = {}
for first = 1, n, 1000 do
  local got = redis.call('MGET', unpack(KEYS, first, math.min(first + 999, n)))
  for i = 1, #got do values[first + i - 1] = got[i] end
end
for i = 1, n do
  if values[i] then
    if redis.pcall('INCR', KEYS[n + i]) == 1 then redis.pcall('EXPIRE', KEYS[n + i], ARGV[1]) end
  end
end
return values
"""
