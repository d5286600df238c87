--[[
  queue_redeliver-8.lua: the partition owner's visibility timer for one group.

  In-flight entries whose visibility deadline has passed (score <= now_ms), earliest first,
  at most `limit`: each whose attempt has reached its max_attempts goes to the group's
  dead-letter queue (keeping body, attempts, last delivery time); every other one goes to
  the retry set, visible now, where the next consume delivers it with attempt + 1. Either
  way its receipt is dead from here on. An ack that ran first removed the entry, so it is
  not seen here.

  KEYS[1]  log       stream  concord:<c>:q:{<topic>:<p>}:log
  KEYS[2]  refs      zset    ...:refs                     "<seq>:<group>" scored by seq
  KEYS[3]  inflight  zset    ...:g:<group>:inflight       seq or lease "L<n>" scored by deadline
  KEYS[4]  retry     zset    ...:g:<group>:retry          seq scored by visible-at
  KEYS[5]  attempts  hash    ...:g:<group>:attempts       seq -> "<attempt>:<last_ms>:<delivery>";
                                                        leases and "#" (see queue_consume-8.lua)
  KEYS[6]  dlq       zset    ...:g:<group>:dlq            seq scored by dead-letter time
  KEYS[7]  dlq_ids   hash    ...:g:<group>:dlq:ids        message id -> "seq[,seq...]"
  KEYS[8]  data      hash    ...:g:<group>:data           seq -> JSON copy

  ARGV[1]  now_ms    current unix time in ms
  ARGV[2]  group     group name (1..256 bytes)
  ARGV[3]  limit     1..10000 in-flight members per call (a lease opens into up to 1000 entries)

  Reply: {requeued, dead_lettered, lost, next_deadline_ms} (integers): lost counts entries
  whose log entry had vanished (state dropped); next_deadline_ms is the earliest remaining
  in-flight deadline, -1 if none (<= now_ms means: call again, the limit was hit).
  Errors (nothing written): "BADARG <what>".
]]
local rcall = redis.call

--@include int_arg
--@include lease_seqs

local now = int_arg(1, "now_ms", 0, 999999999999999)
local group = ARGV[2]
local limit = int_arg(3, "limit", 1, 10000)
if type(group) ~= "string" or #group == 0 or #group > 256 then
  err = err or "BADARG group must be 1..256 bytes"
end
if #ARGV ~= 3 then err = err or ("BADARG expected 3 arguments, got " .. #ARGV) end
if err then return redis.error_reply(err) end

local K_LOG, K_REFS, K_INFLIGHT, K_RETRY = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_ATTEMPTS, K_DLQ, K_DLQ_IDS, K_DATA = KEYS[5], KEYS[6], KEYS[7], KEYS[8]

local function read_entry(seq)
  local copy = rcall("HGET", K_DATA, seq)
  if copy then return cjson.decode(copy) end
  local r = rcall("XRANGE", K_LOG, "0-" .. seq, "0-" .. seq)
  if #r == 0 then return nil end
  local f, e = r[1][2], {}
  for i = 1, #f, 2 do e[f[i]] = f[i + 1] end
  return e
end

local requeued, dead, lost = 0, 0, 0
local members = rcall("ZRANGEBYSCORE", K_INFLIGHT, "-inf", now, "LIMIT", 0, limit)
-- A timed-out lease is opened: each of its entries continues as a delivery of its own
-- (attempt 1, delivery 1, delivered when the lease was), handled below like any other.
-- Leases are opened while fewer than `limit` entries are collected (at least one).
local expired = {}
for _, member in ipairs(members) do
  if #expired >= limit then break end
  if string.sub(member, 1, 1) == "L" then
    local ms, list = string.match(rcall("HGET", K_ATTEMPTS, member) or "", "^(%d+):(.*)$")
    rcall("ZREM", K_INFLIGHT, member)
    rcall("HDEL", K_ATTEMPTS, member)
    rcall("ZREM", K_REFS, member .. ":" .. group)
    if ms then
      local k = 0
      for _, s in ipairs(lease_seqs(list)) do
        k = k + 1
        rcall("HSET", K_ATTEMPTS, s, "1:" .. ms .. ":1")
        rcall("ZADD", K_REFS, s, s .. ":" .. group)
        expired[#expired + 1] = s
      end
      if k > 1 and rcall("HINCRBY", K_ATTEMPTS, "#", 1 - k) <= 0 then rcall("HDEL", K_ATTEMPTS, "#") end
    end
  else
    expired[#expired + 1] = member
  end
end
for _, seq in ipairs(expired) do
  local e = read_entry(seq)
  local state = rcall("HGET", K_ATTEMPTS, seq) or "0:0:0"
  local a, last, cur = string.match(state, "^(%d+):(%d+):(%d+)$")
  local attempt = tonumber(a or 0)
  rcall("ZREM", K_INFLIGHT, seq)
  if not e then
    rcall("HDEL", K_ATTEMPTS, seq)
    rcall("ZREM", K_REFS, seq .. ":" .. group)
    lost = lost + 1
  elseif attempt >= tonumber(e.max or 5) then
    rcall("ZREM", K_RETRY, seq)
    rcall("HDEL", K_ATTEMPTS, seq)
    rcall("ZREM", K_REFS, seq .. ":" .. group)
    rcall("HSET", K_DATA, seq, cjson.encode({
      id = e.id, key = e.key, body = e.body, max = e.max,
      attempts = tostring(attempt), last_delivery_ms = last or "0", deliveries = cur or "0",
      dead_ms = tostring(now)}))
    rcall("ZADD", K_DLQ, now, seq)
    local ids = rcall("HGET", K_DLQ_IDS, e.id)
    rcall("HSET", K_DLQ_IDS, e.id, ids and (ids .. "," .. seq) or seq)
    dead = dead + 1
  else
    rcall("ZADD", K_RETRY, now, seq)
    requeued = requeued + 1
  end
end

local first = rcall("ZRANGE", K_INFLIGHT, 0, 0, "WITHSCORES")
local next_deadline = -1
if #first > 0 then next_deadline = tonumber(first[2]) end
return {requeued, dead, lost, next_deadline}
