--[[
  queue_consume-8.lua: deliver up to max messages of one partition to one consumer group.

  First the group's due retries (nacked or timed-out entries whose visible-at time has
  come), oldest visible-at first; then new log entries after the group's cursor, in log
  order. Each delivered entry becomes in-flight until now + visibility_ms with its attempt
  incremented. Scripts run atomically, so two consumers calling at once never receive the
  same entry.

  A group's first use in this partition (no field in `groups`) sets its cursor to the log's
  current end: the group receives every message produced after that (see queue_group-2.lua).

  KEYS[1]  log        stream  concord:<c>:q:{<topic>:<p>}:log
  KEYS[2]  meta       hash    ...:meta              (lseq = last lease number)
  KEYS[3]  groups     hash    ...:groups            group -> cursor (last delivered seq)
  KEYS[4]  refs       zset    ...:refs              "<seq>:<group>" scored by seq, and
                                                    "L<n>:<group>" scored by the lease's first seq:
                                                    log entries a group still needs (for trim)
  KEYS[5]  inflight   zset    ...:g:<group>:inflight  seq or lease "L<n>" scored by visibility deadline (ms)
  KEYS[6]  retry      zset    ...:g:<group>:retry     seq scored by visible-at time (ms)
  KEYS[7]  attempts   hash    ...:g:<group>:attempts  seq -> "<attempt>:<last_delivery_ms>:<delivery>";
                                                    "L<n>" -> "<delivery_ms>:<first>-<last>" (a new
                                                    lease; one entry: "<ms>:<seq>"), "<ms>:<seq>,..." once an
                                                    entry left it (includes/lease_seqs.lua);
                                                    "#" -> sum over leases of
                                                    (entries - 1), so in-flight = ZCARD(inflight) + "#"
  KEYS[8]  data       hash    ...:g:<group>:data      seq -> JSON copy of a dead/redriven entry

  First deliveries of one call form leases "L<n>" of at most 100 entries (n from meta's
  `lseq`): attempt 1, delivery 1, all delivered at the same time with the same deadline, so
  each lease costs one in-flight member, one attempts record and one ref. A lease entry that is nacked or times out leaves
  the lease and continues as an entry of its own (queue_nack-8, queue_redeliver-8).

  ARGV[1]  now_ms          current unix time in ms
  ARGV[2]  group           group name (1..256 bytes)
  ARGV[3]  partition       partition number 0..65535 (goes into receipts)
  ARGV[4]  max             0..1000 (0 only ensures the group)
  ARGV[5]  visibility_ms   1..43200000 (12 h)

  Reply: an array, in delivery order, of
    {receipt, id, body, key, attempt, seq}   a redelivery (retry), read here
    {lease, first_seq, last_seq}             first deliveries of log entries first..last
                                             (integers) in lease "L<n>": the caller reads
                                             them with XRANGE log 0-<first> 0-<last>; a lease
                                             of at most 4 entries comes instead as its
                                             entries, {receipt, id, body, key, 1, seq} each
  receipt = "<partition>:<seq>:<delivery>", delivery counting every delivery of this entry
  to this group (never reset, unlike attempt, which redrive resets); a first delivery's
  receipt is "<partition>:<seq>:L<n>" (attempt 1). Only the receipt of the current in-flight
  delivery is accepted by ack/nack. attempt and seq are integers.
  Errors (nothing written): "BADARG <what>".
]]
local rcall = redis.call

--@include int_arg
--@include last_seq

local now = int_arg(1, "now_ms", 0, 999999999999999)
local group = ARGV[2]
local partition = int_arg(3, "partition", 0, 65535)
local max = int_arg(4, "max", 0, 1000)
local visibility = int_arg(5, "visibility_ms", 1, 43200000)
if type(group) ~= "string" or #group == 0 or #group > 256 then
  err = err or "BADARG group must be 1..256 bytes"
end
if #ARGV ~= 5 then err = err or ("BADARG expected 5 arguments, got " .. #ARGV) end
if err then return redis.error_reply(err) end

local K_LOG, K_META, K_GROUPS, K_REFS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_INFLIGHT, K_RETRY, K_ATTEMPTS, K_DATA = KEYS[5], KEYS[6], KEYS[7], KEYS[8]

-- Ensure the group: first use starts at the log's current end.
local cursor = rcall("HGET", K_GROUPS, group)
if not cursor then
  cursor = string.format("%d", last_seq(K_LOG))
  rcall("HSET", K_GROUPS, group, cursor)
end
cursor = tonumber(cursor)

-- The entry's fields: the group's own copy (dead-lettered then redriven) or the log entry.
local function read_entry(seq)
  local copy = rcall("HGET", K_DATA, seq)
  if copy then return cjson.decode(copy) end
  local r = rcall("XRANGE", K_LOG, "0-" .. seq, "0-" .. seq)
  if #r == 0 then return nil end
  local f, e = r[1][2], {}
  for i = 1, #f, 2 do e[f[i]] = f[i + 1] end
  return e
end

-- Numbers are formatted once: a Lua number turned into a string goes through
-- sprintf("%.14g") each time, which costs more than the writes here.
local deadline = string.format("%d", now + visibility)
local now_text = string.format("%d", now)
local p_text = string.format("%d", partition)
local reply = {}
-- Writes are collected and sent as one variadic command per key at the end.
local inflight_args, attempts_args, refs_args = {}, {}, {}

-- 1. Due retries.
if max > 0 then
  local due = rcall("ZRANGEBYSCORE", K_RETRY, "-inf", now, "LIMIT", 0, max)
  if #due > 0 then
    rcall("ZREM", K_RETRY, unpack(due))
    local states = rcall("HMGET", K_ATTEMPTS, unpack(due))
    for j, seq in ipairs(due) do
      local e = read_entry(seq)
      if e then
        local a, _, d = string.match(states[j] or "0:0:0", "^(%d+):(%d+):(%d+)$")
        local attempt, delivery = tonumber(a or 0) + 1, tonumber(d or 0) + 1
        inflight_args[#inflight_args + 1] = deadline
        inflight_args[#inflight_args + 1] = seq
        attempts_args[#attempts_args + 1] = seq
        attempts_args[#attempts_args + 1] = attempt .. ":" .. now_text .. ":" .. delivery
        reply[#reply + 1] = {p_text .. ":" .. seq .. ":" .. delivery, e.id or "", e.body or "", e.key or "", attempt, tonumber(seq)}
      else
        -- Its log entry is gone (trimmed by hand?) and no copy exists: drop the state.
        rcall("HDEL", K_ATTEMPTS, seq)
        rcall("ZREM", K_REFS, seq .. ":" .. group)
      end
    end
  end
end

-- 2. New log entries after the cursor, in log order, delivered in leases of at most
-- LEASE_MAX: a single in-flight member, attempts record and ref per lease instead of one per
-- message. The bound keeps an ack of one entry cheap (it rewrites its lease's record).
-- The entries of a long range are not read here: sequence numbers are contiguous (XADD 0-*;
-- only trim deletes, from the head, never past a cursor), so the script reserves the range and
-- the caller reads it with XRANGE, straight from Redis, without a round through Lua tables.
-- A range of at most INLINE_MAX entries is read here, which saves the caller a round trip.
local LEASE_MAX = 100
local INLINE_MAX = 4
local room = max - #reply
if room > 0 then
  local tail = rcall("XREVRANGE", K_LOG, "+", "-", "COUNT", 1)
  local last = #tail > 0 and tonumber(string.match(tail[1][1], "^0%-(%d+)$")) or cursor
  local n = math.min(room, last - cursor)
  if n > 0 then
    local leases = math.floor((n + LEASE_MAX - 1) / LEASE_MAX)
    local last_lease = rcall("HINCRBY", K_META, "lseq", leases)
    local extra = 0
    for l = 1, leases do
      local lease = "L" .. string.format("%d", last_lease - leases + l)
      local first_seq = cursor + (l - 1) * LEASE_MAX + 1
      local last_seq = math.min(cursor + n, cursor + l * LEASE_MAX)
      local first_text = string.format("%d", first_seq)
      local last_text = string.format("%d", last_seq)
      inflight_args[#inflight_args + 1] = deadline
      inflight_args[#inflight_args + 1] = lease
      attempts_args[#attempts_args + 1] = lease
      -- The lease's list as a range (see lease_seqs): written in O(1), whatever its length;
      -- a lease of one entry as that entry (the form a single receipt matches at once in ack).
      attempts_args[#attempts_args + 1] = now_text .. ":" .. (first_seq == last_seq and first_text or (first_text .. "-" .. last_text))
      refs_args[#refs_args + 1] = first_text
      refs_args[#refs_args + 1] = lease .. ":" .. group
      extra = extra + last_seq - first_seq
      if last_seq - first_seq < INLINE_MAX then
        -- A short range is read here: the caller gets the entries in this reply, one round
        -- trip instead of two (a consume of one message at a time).
        for _, entry in ipairs(rcall("XRANGE", K_LOG, "0-" .. first_text, "0-" .. last_text)) do
          local f, e = entry[2], {}
          for i = 1, #f, 2 do e[f[i]] = f[i + 1] end
          local seq = string.sub(entry[1], 3)
          reply[#reply + 1] = {p_text .. ":" .. seq .. ":" .. lease, e.id or "", e.body or "", e.key or "", 1, tonumber(seq)}
        end
      else
        reply[#reply + 1] = {lease, first_seq, last_seq}
      end
    end
    rcall("HSET", K_GROUPS, group, string.format("%d", cursor + n))
    if extra > 0 then rcall("HINCRBY", K_ATTEMPTS, "#", extra) end
  end
end

if #inflight_args > 0 then rcall("ZADD", K_INFLIGHT, unpack(inflight_args)) end
if #attempts_args > 0 then rcall("HSET", K_ATTEMPTS, unpack(attempts_args)) end
if #refs_args > 0 then rcall("ZADD", K_REFS, unpack(refs_args)) end

return reply
