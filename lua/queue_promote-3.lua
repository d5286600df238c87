--[[
  queue_promote-3.lua: the partition owner's delay timer: append due delayed messages to
  the log (earliest due first, at most `limit`), keeping id, key, body and max_attempts.
  They get the next sequence numbers, so groups see them in promotion order.

  KEYS[1]  log           stream  concord:<c>:q:{<topic>:<p>}:log
  KEYS[2]  delayed       zset    ...:delayed           "d<n>" scored by due time (ms)
  KEYS[3]  delayed_data  hash    ...:delayed:data      "d<n>" -> JSON {id,key,body,max}

  ARGV[1]  now_ms   current unix time in ms
  ARGV[2]  limit    1..10000 messages per call

  Reply: {promoted, next_due_ms} (integers): next_due_ms is the earliest remaining due
  time, -1 if none (<= now_ms means: call again, the limit was hit).
  Errors (nothing written): "BADARG <what>".
]]
local rcall = redis.call

--@include int_arg
--@include log_entry

local now = int_arg(1, "now_ms", 0, 999999999999999)
local limit = int_arg(2, "limit", 1, 10000)
if #ARGV ~= 2 then err = err or ("BADARG expected 2 arguments, got " .. #ARGV) end
if err then return redis.error_reply(err) end

local promoted = 0
local due = rcall("ZRANGEBYSCORE", KEYS[2], "-inf", now, "LIMIT", 0, limit)
for _, ref in ipairs(due) do
  local raw = rcall("HGET", KEYS[3], ref)
  rcall("ZREM", KEYS[2], ref)
  rcall("HDEL", KEYS[3], ref)
  if raw then
    local m = cjson.decode(raw)
    rcall("XADD", KEYS[1], "0-*", unpack(log_entry(m.id, m.key, m.body, m.max)))
    promoted = promoted + 1
  end
end

local first = rcall("ZRANGE", KEYS[2], 0, 0, "WITHSCORES")
local next_due = -1
if #first > 0 then next_due = tonumber(first[2]) end
return {promoted, next_due}
