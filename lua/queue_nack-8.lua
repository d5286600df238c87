--[[
  queue_nack-8.lua: give a delivery back: visible again after delay_ms, or by default after
  exponential backoff (1 s x 2^(attempt-1), at most 5 min). A delivery whose attempt has
  reached the entry's max_attempts goes to the group's dead-letter queue instead
  (max_attempts deliveries without an ack), keeping body, attempts and last delivery time.

  KEYS[1]  log       stream  concord:<c>:q:{<topic>:<p>}:log
  KEYS[2]  refs      zset    ...:refs                     "<seq>:<group>" scored by seq
  KEYS[3]  inflight  zset    ...:g:<group>:inflight       seq or lease "L<n>" scored by deadline
  KEYS[4]  retry     zset    ...:g:<group>:retry          seq scored by visible-at
  KEYS[5]  attempts  hash    ...:g:<group>:attempts       seq -> "<attempt>:<last_ms>:<delivery>";
                                                        leases and "#" (see queue_consume-8.lua)
  KEYS[6]  dlq       zset    ...:g:<group>:dlq            seq scored by dead-letter time
  KEYS[7]  dlq_ids   hash    ...:g:<group>:dlq:ids        message id -> "seq[,seq...]"
  KEYS[8]  data      hash    ...:g:<group>:data           seq -> JSON copy

  ARGV[1]  now_ms      current unix time in ms
  ARGV[2]  group       group name (1..256 bytes)
  ARGV[3]  partition   this partition's number, 0..65535
  ARGV[4]  receipt     "<partition>:<seq>:<delivery>" or "<partition>:<seq>:L<n>" (a lease's)
  ARGV[5]  delay_ms    0..43200000, or "" for the default backoff

  Reply: {status, time_ms}
    {"requeued", visible_at_ms}
    {"dead", last_delivery_ms}   moved to the DLQ (attempt >= max_attempts)
    {"not_found", 0}             malformed, other partition, stale or already acked
  Errors (nothing written): "BADARG <what>".
]]
local rcall = redis.call

local BACKOFF_BASE_MS = 1000
local BACKOFF_MAX_MS = 300000

--@include int_arg
--@include lease_seqs

local now = int_arg(1, "now_ms", 0, 999999999999999)
local group = ARGV[2]
local partition = int_arg(3, "partition", 0, 65535)
local receipt = ARGV[4]
local delay = nil
if ARGV[5] ~= "" then delay = int_arg(5, "delay_ms", 0, 43200000) end
if type(group) ~= "string" or #group == 0 or #group > 256 then
  err = err or "BADARG group must be 1..256 bytes"
end
if #ARGV ~= 5 then err = err or ("BADARG expected 5 arguments, got " .. #ARGV) end
if err then return redis.error_reply(err) end

local K_LOG, K_REFS, K_INFLIGHT, K_RETRY = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_ATTEMPTS, K_DLQ, K_DLQ_IDS, K_DATA = KEYS[5], KEYS[6], KEYS[7], KEYS[8]

local p, seq, d = string.match(receipt, "^(%d+):(%d+):(%d+)$")
local lease = nil
if not p then p, seq, lease = string.match(receipt, "^(%d+):(%d+):(L%d+)$") end
if not p or #p > 5 or #seq > 15 or tonumber(p) ~= partition or (lease and #lease > 16) then
  return {"not_found", 0}
end
local a, last, cur
if lease then
  -- A first delivery in a lease: it leaves the lease and continues as a delivery of its own
  -- (attempt 1, delivery 1, delivered when the lease was).
  local ms, list = string.match(rcall("HGET", K_ATTEMPTS, lease) or "", "^(%d+):(.*)$")
  if not ms then return {"not_found", 0} end
  local rest, found = {}, false
  for _, s in ipairs(lease_seqs(list)) do
    if s == seq and not found then found = true else rest[#rest + 1] = s end
  end
  if not found then return {"not_found", 0} end
  if #rest == 0 then
    rcall("HDEL", K_ATTEMPTS, lease)
    rcall("ZREM", K_INFLIGHT, lease)
    rcall("ZREM", K_REFS, lease .. ":" .. group)
  else
    rcall("HSET", K_ATTEMPTS, lease, ms .. ":" .. table.concat(rest, ","))
    rcall("ZADD", K_REFS, rest[1], lease .. ":" .. group)
    if rcall("HINCRBY", K_ATTEMPTS, "#", -1) <= 0 then rcall("HDEL", K_ATTEMPTS, "#") end
  end
  a, last, cur = "1", ms, "1"
  rcall("HSET", K_ATTEMPTS, seq, "1:" .. ms .. ":1")
  rcall("ZADD", K_REFS, seq, seq .. ":" .. group)
else
  if not rcall("ZSCORE", K_INFLIGHT, seq) then return {"not_found", 0} end
  local state = rcall("HGET", K_ATTEMPTS, seq) or ""
  a, last, cur = string.match(state, "^(%d+):(%d+):(%d+)$")
  if not cur or tonumber(cur) ~= tonumber(d) then return {"not_found", 0} end
end
local attempt = tonumber(a)

local function read_entry()
  local copy = rcall("HGET", K_DATA, seq)
  if copy then return cjson.decode(copy) end
  local r = rcall("XRANGE", K_LOG, "0-" .. seq, "0-" .. seq)
  if #r == 0 then return nil end
  local f, e = r[1][2], {}
  for i = 1, #f, 2 do e[f[i]] = f[i + 1] end
  return e
end

local e = read_entry()
if not e then
  -- The log entry is gone and no copy exists: nothing left to requeue.
  rcall("ZREM", K_INFLIGHT, seq)
  rcall("HDEL", K_ATTEMPTS, seq)
  rcall("ZREM", K_REFS, seq .. ":" .. group)
  return {"not_found", 0}
end

if attempt >= tonumber(e.max or 5) then
  rcall("ZREM", K_INFLIGHT, seq)
  rcall("ZREM", K_RETRY, seq)
  rcall("HDEL", K_ATTEMPTS, seq)
  rcall("ZREM", K_REFS, seq .. ":" .. group)
  rcall("HSET", K_DATA, seq, cjson.encode({
    id = e.id, key = e.key, body = e.body, max = e.max,
    attempts = tostring(attempt), last_delivery_ms = last, deliveries = cur,
    dead_ms = tostring(now)}))
  rcall("ZADD", K_DLQ, now, seq)
  local ids = rcall("HGET", K_DLQ_IDS, e.id)
  rcall("HSET", K_DLQ_IDS, e.id, ids and (ids .. "," .. seq) or seq)
  return {"dead", tonumber(last)}
end

if not delay then
  delay = math.floor(BACKOFF_BASE_MS * 2 ^ (math.min(attempt, 20) - 1))
  if delay > BACKOFF_MAX_MS then delay = BACKOFF_MAX_MS end
end
local visible_at = now + delay
rcall("ZREM", K_INFLIGHT, seq)
-- Out of flight, the receipt is dead; the next consume delivers attempt + 1.
rcall("ZADD", K_RETRY, visible_at, seq)
return {"requeued", visible_at}
