"""The Lua scripts of the channels' histories, which the Redis broker runs on the engine (text only, no I/O).

Each runs atomically on the engine, so a publish is numbered, kept and
announced in one step, and a read sees the channel's sequence number and
history at one instant. Only commands that Redis 7.0 and Valkey 7.2+ share.
The scripts of counts and presence across processes: ``_presence_scripts.py``.
"""

from __future__ import annotations

__all__ = ["PUBLISH", "PUBLISH_CLUSTER", "READ", "READ_CLUSTER", "held_number"]


def held_number(last: bytes | None) -> int:
    """The sequence number a channel's last-id key holds (its third line); 0 if none.

    On a cluster that key is where the channel's number lives (see the publish
    script below).
    """
    if last is None:
        return 0
    lines = last.split(b"\n", 3)
    return int(lines[2]) if len(lines) == 4 and lines[2].isdigit() else 0


# A batch of publishes.
# KEYS (one engine): the state hash (the epoch, and each channel's sequence
# number), this batch's result key, the result keys of n acknowledged batches
# (deleted), then per channel of the batch: its seq key ({prefix}|seq:{channel},
# the name of its field in the state hash: never a key of its own), last-id,
# stream. On a cluster (every key of the call in one slot): no state hash;
# per channel, its last-id key (which holds its number), stream and sharded
# pub/sub channel.
# ARGV: candidate epoch (on a cluster: the epoch), max entries, max age (ms), max bytes, bytes counted
# per entry besides its wire bytes, retry flag, result lifetime (ms), n, the
# pub/sub channels' prefix (the channel's name follows; one engine only), on a cluster
# n: how many of the keys come as the next n arguments instead (KEYS then holds the
# result key only: a batch of several slots of one node, which the script's flag
# allow-cross-slot-keys permits; 0: all in KEYS, one slot), then one per event:
# "{channel index}[ {traceparent}]\n{own id mark}\n{event fields}" (channel
# index from 0 in KEYS order; own id mark '' = none, else '=' .. id; the
# traceparent, when given, follows the time in the message, see _wire.py).
# Returns {epoch, then each event's seq and the id of the event before it}.
#
# The reply is also kept under the batch's result key for the result lifetime
# (until the client acknowledges it, in a later batch): a retry whose first
# attempt ran (its reply was lost) gets that reply again, and nothing is
# published twice, even where later events already trimmed these from history.
#
# Each entry holds its message 'm', the engine's time 't' (ms), its size 's'
# (its wire bytes as connections send it, plus the bookkeeping) and 'b', where
# it starts in the channel's running sum of sizes (the sum so far is kept in
# the last-id key, with the newest id): the entries kept weigh
# b(newest) + s(newest) - b(oldest), whatever trimmed the front (count, age,
# bytes), so no total has to be kept in step. After each XADD the oldest
# entries are trimmed while they weigh more than max bytes (the stream is read
# only when a kept lower bound of b(oldest) says they may); the new entry is
# never trimmed by its own publish (the client refuses an event larger than
# max bytes before sending it). Each channel's last-id key is read and written,
# and its stream's expiry set, once per batch.
#
# On one engine, a channel's number lives in the same key as the epoch, so it
# is not lost while the epoch stays. Where its number is missing but the
# channel's last-id key or stream is not (the field was deleted, or the whole
# state and with it the epoch), numbering goes on after the highest number
# they hold: an id is never issued twice, and a stream's entry ids keep
# increasing. On a cluster, a channel's number is the one its last-id key
# holds (no key of its own: one command less per event), and a channel whose
# keys are all gone (a new channel, or one whose shard lost its data) starts
# from the engine's clock in microseconds instead of 0, above any number it issued before (unless it
# averaged more than a million events a second): its ids are never issued
# twice either, under the cluster's one epoch, and the first event's
# predecessor is the origin ({epoch}-0), so readers know where it starts.
# Numbers are written with string.format('%.0f'): the clock's pass 2^31 (and
# Lua's default conversion writes them in exponent form).
_PUBLISH = """
local function num(n) return string.format('%.0f', n) end
--KEYS--
--PROLOGUE--
local acked = tonumber(ARGV[8])
for k = R + 1, R + acked do redis.call('DEL', K[k]) end
if ARGV[6] == '1' then
  local done = redis.call('GET', K[R])
  if done then
    -- A write, so that a WAIT after it on a new connection covers the batch's writes.
    redis.call('PEXPIRE', K[R], ARGV[7])
    local again = {}
    for part in string.gmatch(done .. '\\n', '([^\\n]*)\\n') do again[#again + 1] = part end
    return again
  end
end

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return nil
end

local max_age = tonumber(ARGV[3])
local max_bytes = tonumber(ARGV[4])
local overhead = tonumber(ARGV[5])
local now = redis.call('TIME')
local ms = num(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
local result = {epoch}
local first = R + acked
-- A channel's state, from its last-id key, which holds four lines: where the
-- newest entry ends in the running sum of sizes, a lower bound of where the
-- oldest starts (trims by count or age only raise it), the newest entry's
-- sequence number and its id. It is read before a channel's first event of
-- the batch and written after its last.
local state = {}
local function load(k)
  local st = {prev = epoch .. '-0', finish = nil, front_bound = -1, seq = nil}
  local last = redis.call('GET', K[first + L + W * k])
  if last then
    local f, b, n, i = string.match(last, '^(%d+)\\n(%-?%d+)\\n(%d+)\\n(.*)$')
    if f then
      st.prev, st.finish, st.front_bound, st.seq = i, tonumber(f), tonumber(b), tonumber(n)
    else
      st.prev = last
    end
  end
  state[k] = st
  return st
end
--LOAD--
for e = 0, #ARGV - E do
  local arg = ARGV[E + e]
  local cut1 = string.find(arg, '\\n', 1, true)
  local cut2 = string.find(arg, '\\n', cut1 + 1, true)
  local head = string.sub(arg, 1, cut1 - 1)
  local space = string.find(head, ' ', 1, true)
  local trace = ''
  if space then
    trace = string.sub(head, space)
    head = string.sub(head, 1, space - 1)
  end
  local k = tonumber(head)
  local own = string.sub(arg, cut1 + 1, cut2 - 1)
  local fields_ = string.sub(arg, cut2 + 1)
  local stream = K[first + S + W * k]
  local st = state[k] or load(k)
  --NEXT--
  if seq == 1 then
    -- A new channel, or its number was lost: go on after what its keys hold.
    local high = 0
    local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    if #newest > 0 then high = tonumber(string.match(newest[1][1], '^(%d+)')) end
    if st.seq and st.seq > high then high = st.seq end
    --FRESH--
    if high > 0 then
      seq = high + 1
      --SET--
    end
  end
  local id = epoch .. '-' .. num(seq)
  if own ~= '' then id = string.sub(own, 2) end
  local prev = st.prev
  local front_bound = st.front_bound
  local message = epoch .. '\\n' .. num(seq) .. '\\n' .. id .. '\\n' .. prev .. '\\n' .. ms .. trace
  message = message .. '\\n' .. fields_

  -- Bytes: where this entry starts in the channel's running sum of sizes.
  local size = #fields_ + #id + 6 + overhead
  local start = st.finish
  if start == nil then
    start = 0
    local newest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    if #newest > 0 then
      start = (tonumber(field(newest[1][2], 'b')) or 0) + (tonumber(field(newest[1][2], 's')) or 0)
    end
  end
  local entry = num(seq) .. '-0'
  redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], entry, 'm', message, 't', ms, 'b', start, 's', size)
  -- Keep the entries that start at or after `floor`: they weigh at most max bytes.
  local floor = start + size - max_bytes
  local after = '-'
  local batch = 1
  while front_bound < floor do
    local front = redis.call('XRANGE', stream, after, '+', 'COUNT', batch)
    local keep = nil
    for _, item in ipairs(front) do
      local b = tonumber(field(item[2], 'b')) or floor
      if b >= floor or item[1] == entry then
        keep = item[1]
        front_bound = b
        break
      end
    end
    if keep ~= nil then
      if after ~= '-' or keep ~= front[1][1] then redis.call('XTRIM', stream, 'MINID', keep) end
      break
    end
    if #front == 0 then break end
    after = '(' .. front[#front][1]
    batch = 32
  end

  if seq % 16 == 0 then
    -- Age: drop expired entries from the front, a few at a time.
    local cutoff = tonumber(ms) - max_age
    local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 32)
    local keep = nil
    for _, item in ipairs(oldest) do
      local t = tonumber(field(item[2], 't'))
      if t == nil or t >= cutoff or item[1] == entry then
        keep = item[1]
        break
      end
    end
    if keep == nil and #oldest > 0 then
      keep = num(tonumber(string.match(oldest[#oldest][1], '^(%d+)')) + 1) .. '-0'
    end
    if keep ~= nil then redis.call('XTRIM', stream, 'MINID', keep) end
  end
  st.prev, st.finish, st.front_bound, st.seq = id, start + size, front_bound, seq
  --PUBLISH--
  result[#result + 1] = num(seq)
  result[#result + 1] = prev
end
for k, st in pairs(state) do
  local last = num(st.finish) .. '\\n' .. num(st.front_bound) .. '\\n' .. num(st.seq) .. '\\n' .. st.prev
  redis.call('SET', K[first + L + W * k], last)
  redis.call('PEXPIRE', K[first + S + W * k], ARGV[3])
end
redis.call('SET', K[R], table.concat(result, '\\n'), 'PX', ARGV[7])
return result
"""

PUBLISH = (
    _PUBLISH.replace("--KEYS--", "local K, E = KEYS, 10")
    .replace(
        "--PROLOGUE--",
        """local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local R, W, L, S = 2, 3, 2, 3""",
    )
    .replace("--LOAD--\n", "")
    .replace(
        "--NEXT--",
        """local seq_key = K[first + 1 + W * k]
  local bar = string.find(seq_key, '|', 1, true)
  local seq_field = string.sub(seq_key, bar + 1)
  local seq = redis.call('HINCRBY', KEYS[1], seq_field, 1)""",
    )
    .replace("    --FRESH--\n", "")
    .replace("--SET--", "redis.call('HSET', KEYS[1], seq_field, num(seq))")
    .replace("--PUBLISH--", "redis.call('PUBLISH', ARGV[9] .. string.sub(seq_key, bar + 5), message)")
)

PUBLISH_CLUSTER = "#!lua flags=allow-cross-slot-keys" + (
    _PUBLISH.replace(
        "--KEYS--",
        """local K, E = KEYS, 11
local nk = tonumber(ARGV[10])
if nk > 0 then
  -- A batch of several slots of this node: their keys come as arguments.
  K = {KEYS[1]}
  for i = 11, 10 + nk do K[#K + 1] = ARGV[i] end
  E = 11 + nk
end""",
    )
    .replace("--PROLOGUE--", "local epoch = ARGV[1]\nlocal R, W, L, S = 1, 3, 1, 2")
    .replace(
        "--LOAD--",
        # Every channel's last-id key is read before anything is written: a batch of several
        # slots whose map was stale (a slot moved away) fails on a key this node does not serve
        # before it changed anything (the keys a channel's events write are in its key's slot).
        "for k = 0, (#K - first) / W - 1 do load(k) end",
    )
    .replace("--NEXT--", "local seq = (st.seq or 0) + 1")
    .replace(
        "--FRESH--",
        """if high == 0 then
      local clock = redis.call('TIME')
      high = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
    end""",
    )
    .replace("--SET--", "")
    .replace("--PUBLISH--", "redis.call('SPUBLISH', K[first + 3 + W * k], message)")
)

# Reads of one or more channels' histories (one call for all the channels a
# connection needs). KEYS (one engine): the state hash, then each channel's
# stream ({prefix}|h:{channel}: its field in the state hash, seq:{channel}, is
# taken from that name); on a cluster (all in one slot): each channel's last-id key
# and stream. ARGV: count, then one argument: each channel's "after"
# (-1: the newest entries), in KEYS order, separated by spaces (two strings
# for the client to encode however many channels are read, not two per
# channel), then a budget: once the messages read reach it, the channels left
# are not read (the client reads them in another call), so a reply weighs at
# most a budget and one channel's worth, however many empty channels it
# covers; on a cluster, then the epoch and n: how many keys come as the next n arguments
# instead of KEYS (channels of several slots of one node; 0: all in KEYS, one slot).
# Returns {epoch or '', then per channel read, in KEYS order: newest seq,
# {message, ...} oldest first}; at least the first channel is read.
_READ = """
local count = ARGV[1]
local budget = tonumber(ARGV[3])
local total = 0
--PROLOGUE--
local k = 0
for after in string.gmatch(ARGV[2], '%S+') do
  if total >= budget then break end
  k = k + 1
  --KEYS--
  local items
  if after == '-1' then
    items = redis.call('XREVRANGE', key, '+', '-', 'COUNT', count)
    local reversed = {}
    for i = #items, 1, -1 do reversed[#reversed + 1] = items[i] end
    items = reversed
  else
    items = redis.call('XRANGE', key, '(' .. after .. '-0', '+', 'COUNT', count)
  end
  local messages = {}
  for _, item in ipairs(items) do
    local fields = item[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'm' then messages[#messages + 1] = fields[i + 1] end
    end
  end
  reply[#reply + 1] = newest
  reply[#reply + 1] = messages
  total = total + #messages
end
return reply
"""

READ = _READ.replace("--PROLOGUE--", "local reply = {redis.call('HGET', KEYS[1], 'epoch') or ''}").replace(
    "--KEYS--",
    """local key = KEYS[k + 1]
  local bar = string.find(key, '|', 1, true)
  local newest = redis.call('HGET', KEYS[1], 'seq:' .. string.sub(key, bar + 3)) or '0'""",
)

READ_CLUSTER = "#!lua flags=allow-cross-slot-keys" + _READ.replace(
    "--PROLOGUE--",
    """local reply = {ARGV[4]}
-- Channels of several slots of this node: their keys come as arguments (KEYS holds the
-- first, for the routing): a key this node does not serve fails the read, which writes nothing.
local K = KEYS
local nk = tonumber(ARGV[5])
if nk > 0 then
  K = {}
  for i = 6, 5 + nk do K[#K + 1] = ARGV[i] end
end""",
).replace(
    "--KEYS--",
    """local key = K[2 * k]
  local last = redis.call('GET', K[2 * k - 1])
  local newest = last and string.match(last, '^%d+\\n%-?%d+\\n(%d+)\\n') or '0'""",
)
