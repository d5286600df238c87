--[[
  queue_redrive-5.lua: move dead-lettered entries of one group back to ready: into the
  retry set, visible now, attempts reset to 0 (the next delivery is attempt 1). The group's
  JSON copy of each entry stays in `data` until it is acked, so a trimmed log does not
  matter. Receipts keep counting deliveries, so a receipt from before the DLQ stays dead.

  KEYS[1]  retry     zset  concord:<c>:q:{<topic>:<p>}:g:<group>:retry    seq scored by visible-at
  KEYS[2]  attempts  hash  ...:g:<group>:attempts   seq -> "<attempt>:<last_ms>:<delivery>"
  KEYS[3]  dlq       zset  ...:g:<group>:dlq        seq scored by dead-letter time
  KEYS[4]  dlq_ids   hash  ...:g:<group>:dlq:ids    message id -> "seq[,seq...]"
  KEYS[5]  data      hash  ...:g:<group>:data       seq -> JSON copy

  ARGV[1]  now_ms   current unix time in ms
  ARGV[2]  limit    1..10000: at most this many entries per call
  ARGV[3..] ids     0..1000 message ids; none = the oldest `limit` dead entries

  Reply: {redriven, {not_found id, ...}, remaining}: remaining = entries left in this DLQ
  (with no ids and remaining > 0: call again).
  Errors (nothing written): "BADARG <what>".
]]
local rcall = redis.call

--@include int_arg

local now = int_arg(1, "now_ms", 0, 999999999999999)
local limit = int_arg(2, "limit", 1, 10000)
if #ARGV < 2 or #ARGV > 1002 then
  err = err or "BADARG expected now_ms, limit and 0..1000 ids"
end
if err then return redis.error_reply(err) end

local K_RETRY, K_ATTEMPTS, K_DLQ, K_DLQ_IDS, K_DATA = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local redriven, not_found = 0, {}

-- Remove seq from the comma-separated list of its id's dead entries.
local function unindex(id, seq)
  local list = rcall("HGET", K_DLQ_IDS, id)
  if not list then return end
  local keep = {}
  for s in string.gmatch(list, "%d+") do
    if s ~= seq then keep[#keep + 1] = s end
  end
  if #keep == 0 then rcall("HDEL", K_DLQ_IDS, id)
  else rcall("HSET", K_DLQ_IDS, id, table.concat(keep, ",")) end
end

local function redrive(seq)
  if redriven >= limit then return end
  if not rcall("ZSCORE", K_DLQ, seq) then return end
  local raw = rcall("HGET", K_DATA, seq)
  rcall("ZREM", K_DLQ, seq)
  if not raw then return end
  local e = cjson.decode(raw)
  unindex(e.id, seq)
  rcall("ZADD", K_RETRY, now, seq)
  rcall("HSET", K_ATTEMPTS, seq, "0:" .. (e.last_delivery_ms or "0") .. ":" .. (e.deliveries or "0"))
  redriven = redriven + 1
end

if #ARGV == 2 then
  for _, seq in ipairs(rcall("ZRANGE", K_DLQ, 0, limit - 1)) do redrive(seq) end
else
  for i = 3, #ARGV do
    local list = rcall("HGET", K_DLQ_IDS, ARGV[i])
    if list then
      for seq in string.gmatch(list, "%d+") do redrive(seq) end
    else
      not_found[#not_found + 1] = ARGV[i]
    end
  end
end
return {redriven, not_found, rcall("ZCARD", K_DLQ)}
