"""The Lua scripts the Redis broker runs on the engine (text only, no I/O).

Each runs atomically on the engine, so a publish is numbered, kept and
announced in one step, and a read sees the channel's sequence number and
history at one instant. Only commands that Redis 7.0 and Valkey 7.2+ share.
"""

from __future__ import annotations

__all__ = ["PUBLISH", "READ"]

# A batch of publishes. KEYS: epoch, then per event: seq, last-id, stream.
# ARGV: candidate epoch, max entries, max age (ms), retry flag, batch token,
# key prefix, pub/sub channel override ('' = {prefix}ch:{channel}), then per
# event (2 each): event fields, own id ('' = none, else '=' .. id). Each event
# is marked with the token "{batch token}:{index}".
# Returns {epoch, then each event's seq and the id of the event before it}.
# On a retry, an event whose token is in its channel's recent history was
# published by the failed attempt: its seq is returned, not published again.
PUBLISH = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local max_age = tonumber(ARGV[3])
local now = redis.call('TIME')
local ms = string.format('%.0f', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
local result = {epoch}
local count = (#KEYS - 1) / 3
for e = 0, count - 1 do
  local seq_key, last_key, stream = KEYS[2 + 3 * e], KEYS[3 + 3 * e], KEYS[4 + 3 * e]
  local a = 7 + 2 * e
  local token = ARGV[5] .. ':' .. e
  local found = nil
  local found_prev = ''

  if ARGV[4] == '1' then
    local recent = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 512)
    for _, item in ipairs(recent) do
      local fields = item[2]
      local message = ''
      for i = 1, #fields, 2 do
        if fields[i] == 'm' then message = fields[i + 1] end
        if fields[i] == 'k' and fields[i + 1] == token then found = string.match(item[1], '^(%d+)') end
      end
      if found then
        found_prev = string.match(message, '^[^\\n]*\\n[^\\n]*\\n[^\\n]*\\n([^\\n]*)\\n') or ''
        break
      end
    end
  end
  if found then
    result[#result + 1] = found
    result[#result + 1] = found_prev
  else
    local seq = redis.call('INCR', seq_key)
    local id = epoch .. '-' .. seq
    if ARGV[a + 2] ~= '' then id = string.sub(ARGV[a + 2], 2) end
    local prev = redis.call('GET', last_key) or (epoch .. '-0')
    redis.call('SET', last_key, id)
    local message = epoch .. '\\n' .. seq .. '\\n' .. id .. '\\n' .. prev .. '\\n' .. ms
    message = message .. '\\n' .. ARGV[a + 1]
    redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], seq .. '-0', 'm', message, 't', ms, 'k', token)
    if seq % 16 == 0 then
      -- Age: drop expired entries from the front, a few at a time.
      local cutoff = tonumber(ms) - max_age
      local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 32)
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
      if keep ~= nil then redis.call('XTRIM', stream, 'MINID', keep) end
    end
    redis.call('PEXPIRE', stream, ARGV[3])
    local feed = ARGV[7]
    if feed == '' then feed = ARGV[6] .. 'ch:' .. string.sub(seq_key, #ARGV[6] + 5) end
    redis.call('PUBLISH', feed, message)
    result[#result + 1] = tostring(seq)
    result[#result + 1] = prev
  end
end
return result
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
