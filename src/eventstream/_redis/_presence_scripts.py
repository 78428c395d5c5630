"""The Lua scripts of counts and presence across processes, run on the engine (text only, no I/O).

Each process's heartbeat writes its part, and the queries read the live
processes' parts, in one script call each, atomically (see ``_presence.py``).
Only commands that Redis 7.0 and Valkey 7.2+ share. The scripts of the
channels' histories: ``_scripts.py``.
"""

from __future__ import annotations

__all__ = ["COUNT_ALL", "HEARTBEAT", "PRESENCE"]

# Presence and counts across processes (see _presence.py). Every key starts
# with ARGV's base ({prefix}|pr:); a process's keys name it by its random id:
# {base}n:{pid} (hash: channel -> its subscribers, '' -> all of them),
# {base}m:{pid}:{channel} (hash: identity -> its streams, then a space and its info's
# JSON when it has some: _core/_presence.member_value; the scripts never read it), {base}c:{pid} (set:
# the channels that have such a hash). KEYS[1] ({base}live, a sorted set) holds
# each process by the engine's time (ms) of its last beat: one past the expiry is dead.
_PRESENCE_COMMON = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local live, base, expiry = KEYS[1], ARGV[1], tonumber(ARGV[2])
-- A key another app (or a hand) wrote under the prefix may hold another type: read as empty.
local function listed(command, key)
  local got = redis.pcall(command, key)
  if got.err then return {} end
  return got
end
local function drop(p)
  redis.call('ZREM', live, p)
  local index = base .. 'c:' .. p
  for _, ch in ipairs(listed('SMEMBERS', index)) do redis.call('DEL', base .. 'm:' .. p .. ':' .. ch) end
  redis.call('DEL', index, base .. 'n:' .. p)
end
"""

# One process's beat. ARGV: base, expiry (ms), its id, mode ('full': its keys
# are rewritten; 'diff': changes since its last beat, refused (0) if the engine
# no longer holds it; 'leave': its keys are deleted), n, then n pairs (channel,
# subscribers; '0': none), then triples (channel, identity, streams; '0': none).
# The dead (at most 16 per beat) are deleted, by exactly one beat, which leaves
# {base}b:{pid} for a minute (at least ten expiries). Returns {1}; or, for a 'diff'
# the engine no longer holds, {0} (send 'full') or {2} (send 'full': it was taken for
# dead, so its members' leaves went out: announce their joins again); followed by the
# (channel, identity) pairs the dead held (at most 1,024 pairs: the beat that deleted
# them announces their leave events).
HEARTBEAT = (
    _PRESENCE_COMMON
    + """
local dead = redis.call('ZRANGEBYSCORE', live, '-inf', '(' .. (ms - expiry), 'LIMIT', 0, 16)
local reply = {1}
for _, p in ipairs(dead) do
  for _, ch in ipairs(listed('SMEMBERS', base .. 'c:' .. p)) do
    for _, who in ipairs(listed('HKEYS', base .. 'm:' .. p .. ':' .. ch)) do
      if #reply < 2049 then reply[#reply + 1] = ch reply[#reply + 1] = who end
    end
  end
  drop(p)
  -- If it was only stalled, it learns at its next beat that its members' leaves went out.
  redis.call('SET', base .. 'b:' .. p, '1', 'PX', math.max(60000, 10 * expiry))
end
local pid, mode = ARGV[3], ARGV[4]
if mode == 'leave' then drop(pid) return reply end
if mode == 'diff' and not redis.call('ZSCORE', live, pid) then
  reply[1] = redis.call('EXISTS', base .. 'b:' .. pid) == 1 and 2 or 0
  return reply
end
if mode == 'full' then drop(pid) redis.call('DEL', base .. 'b:' .. pid) end
redis.call('ZADD', live, ms, pid)
local counts = base .. 'n:' .. pid
local n = tonumber(ARGV[5])
for i = 6, 5 + 2 * n, 2 do
  if ARGV[i + 1] == '0' then redis.call('HDEL', counts, ARGV[i])
  else redis.call('HSET', counts, ARGV[i], ARGV[i + 1]) end
end
local index = base .. 'c:' .. pid
for i = 6 + 2 * n, #ARGV, 3 do
  local key = base .. 'm:' .. pid .. ':' .. ARGV[i]
  if ARGV[i + 2] == '0' then
    redis.call('HDEL', key, ARGV[i + 1])
    if redis.call('EXISTS', key) == 0 then redis.call('SREM', index, ARGV[i]) end
  else
    redis.call('HSET', key, ARGV[i + 1], ARGV[i + 2])
    redis.call('SADD', index, ARGV[i])
  end
end
return reply
"""
)

# The subscribers of a channel ('': of all) in the live processes but one.
# ARGV: base, expiry (ms), the id left out, the channel.
COUNT_ALL = (
    _PRESENCE_COMMON
    + """
local total = 0
for _, p in ipairs(redis.call('ZRANGEBYSCORE', live, ms - expiry, '+inf')) do
  if p ~= ARGV[3] then
    local v = redis.pcall('HGET', base .. 'n:' .. p, ARGV[4])
    local n = type(v) == 'string' and tonumber(v)
    if n and n > 0 and n < 1e12 then total = total + math.floor(n) end
  end
end
return total
"""
)

# Who is subscribed to a channel in the live processes but one: each one's
# identity -> streams pairs, one after another. ARGV: as COUNT_ALL's.
PRESENCE = (
    _PRESENCE_COMMON
    + """
local found = {}
for _, p in ipairs(redis.call('ZRANGEBYSCORE', live, ms - expiry, '+inf')) do
  if p ~= ARGV[3] then
    for _, v in ipairs(listed('HGETALL', base .. 'm:' .. p .. ':' .. ARGV[4])) do found[#found + 1] = v end
  end
end
return found
"""
)
