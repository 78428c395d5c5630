"""The Lua scripts the Redis broker runs on the engine (text only, no I/O).

Each runs atomically on the engine, so a publish is numbered, kept and
announced in one step, and a read sees the channel's sequence number and
history at one instant. Only commands that Redis 7.0 and Valkey 7.2+ share.
"""

from __future__ import annotations

__all__ = ["PUBLISH", "READ"]

# KEYS: epoch, seq, last-id, stream. ARGV: candidate epoch, pub/sub channel, event fields,
# has-own-id flag, own id, max entries, max age (ms), token, retry flag.
PUBLISH = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
if ARGV[9] == '1' then
  local recent = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 512)
  for _, item in ipairs(recent) do
    local fields = item[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'k' and fields[i + 1] == ARGV[8] then
        return {epoch, string.match(item[1], '^(%d+)'), 1}
      end
    end
  end
end
local seq = redis.call('INCR', KEYS[2])
local id = epoch .. '-' .. seq
if ARGV[4] == '1' then id = ARGV[5] end
local prev = redis.call('GET', KEYS[3]) or (epoch .. '-0')
redis.call('SET', KEYS[3], id)
local now = redis.call('TIME')
local ms = string.format('%.0f', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
local message = epoch .. '\\n' .. seq .. '\\n' .. id .. '\\n' .. prev .. '\\n' .. ms .. '\\n' .. ARGV[3]
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], seq .. '-0', 'm', message, 't', ms, 'k', ARGV[8])
local cutoff = tonumber(ms) - tonumber(ARGV[7])
local oldest = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 8)
local keep = nil
for _, item in ipairs(oldest) do
  local fields = item[2]
  local t = nil
  for i = 1, #fields, 2 do
    if fields[i] == 't' then t = tonumber(fields[i + 1]) end
  end
  if t == nil or t >= cutoff then
    keep = item[1]
    break
  end
end
if keep == nil and #oldest > 0 then
  keep = (tonumber(string.match(oldest[#oldest][1], '^(%d+)')) + 1) .. '-0'
end
if keep ~= nil then redis.call('XTRIM', KEYS[4], 'MINID', keep) end
redis.call('PEXPIRE', KEYS[4], ARGV[7])
redis.call('PUBLISH', ARGV[2], message)
return {epoch, tostring(seq), 0}
"""

# KEYS: epoch, seq, stream. ARGV: after (-1: the newest entries), count.
# Returns {epoch or '', newest seq, {message, ...} oldest first}.
READ = """
local epoch = redis.call('GET', KEYS[1]) or ''
local seq = redis.call('GET', KEYS[2]) or '0'
local items
if ARGV[1] == '-1' then
  items = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', ARGV[2])
  local reversed = {}
  for i = #items, 1, -1 do reversed[#reversed + 1] = items[i] end
  items = reversed
else
  items = redis.call('XRANGE', KEYS[3], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
end
local messages = {}
for _, item in ipairs(items) do
  local fields = item[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'm' then messages[#messages + 1] = fields[i + 1] end
  end
end
return {epoch, seq, messages}
"""
