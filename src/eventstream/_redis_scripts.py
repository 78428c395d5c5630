"""The Lua scripts the Redis broker runs on the engine (text only, no I/O).

Each runs atomically on the engine, so a publish is numbered, kept and
announced in one step, and a read sees the channel's sequence number and
history at one instant. Only commands that Redis 7.0 and Valkey 7.2+ share.
"""

from __future__ import annotations

__all__ = ["PUBLISH", "READ"]

# A batch of publishes. KEYS: epoch, then per channel of the batch: seq,
# last-id, stream. ARGV: candidate epoch, max entries, max age (ms), retry
# flag, batch token, key prefix, pub/sub channel override ('' =
# {prefix}ch:{channel}), then one per event: "{channel index}\n{own id mark}\n{event fields}"
# (channel index from 0 in KEYS order; own id mark '' = none, else '=' .. id).
# Each event is marked with the token "{batch token}:{index}".
# Returns {epoch, then each event's seq and the id of the event before it}.
# On a retry, an event whose token is in its channel's recent history was
# published by the failed attempt: its seq is returned, not published again.
# Each channel's last id is read and written, and its stream's expiry set,
# once per batch.
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
local last = {}
for e = 0, #ARGV - 8 do
  local arg = ARGV[8 + e]
  local cut1 = string.find(arg, '\\n', 1, true)
  local cut2 = string.find(arg, '\\n', cut1 + 1, true)
  local k = tonumber(string.sub(arg, 1, cut1 - 1))
  local own = string.sub(arg, cut1 + 1, cut2 - 1)
  local seq_key, last_key, stream = KEYS[2 + 3 * k], KEYS[3 + 3 * k], KEYS[4 + 3 * k]
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
    if own ~= '' then id = string.sub(own, 2) end
    local prev = last[k]
    if prev == nil then prev = redis.call('GET', last_key) or (epoch .. '-0') end
    last[k] = id
    local message = epoch .. '\\n' .. seq .. '\\n' .. id .. '\\n' .. prev .. '\\n' .. ms
    message = message .. '\\n' .. string.sub(arg, cut2 + 1)
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
    local feed = ARGV[7]
    if feed == '' then feed = ARGV[6] .. 'ch:' .. string.sub(seq_key, #ARGV[6] + 5) end
    redis.call('PUBLISH', feed, message)
    result[#result + 1] = tostring(seq)
    result[#result + 1] = prev
  end
end
for k, id in pairs(last) do
  redis.call('SET', KEYS[3 + 3 * k], id)
  redis.call('PEXPIRE', KEYS[4 + 3 * k], ARGV[3])
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
