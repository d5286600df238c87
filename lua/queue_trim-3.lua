--[[
  queue_trim-3.lua: drop log entries no group needs any more (XTRIM MINID, exact).

  An entry is needed while some group has not received it yet (seq > the group's cursor)
  or still holds it in flight or in retry without its own copy (`refs`). Dead-lettered and
  redriven entries live on in the group's `data` copy and do not hold the log. Entries
  produced before any group existed are never delivered (a group starts at the log's end),
  so with no groups everything but the newest `retain` entries goes.

  KEYS[1]  log      stream  concord:<c>:q:{<topic>:<p>}:log
  KEYS[2]  groups   hash    ...:groups     group -> cursor (read: HVALS, O(groups))
  KEYS[3]  refs     zset    ...:refs       "<seq>:<group>" scored by seq

  ARGV[1]  max_delete   1..100000 entries removed per call at most
  ARGV[2]  retain       0..1000000000: always keep at least the newest `retain` entries

  Reply: {deleted, keep_from_seq} (integers): keep_from_seq is the lowest sequence number
  still needed (entries below it may all go; with deleted == max_delete call again).
  Errors (nothing written): "BADARG <what>".
]]
local rcall = redis.call

--@include int_arg

local max_delete = int_arg(1, "max_delete", 1, 100000)
local retain = int_arg(2, "retain", 0, 1000000000)
if #ARGV ~= 2 then err = err or ("BADARG expected 2 arguments, got " .. #ARGV) end
if err then return redis.error_reply(err) end

local head = rcall("XRANGE", KEYS[1], "-", "+", "COUNT", 1)
local tail = rcall("XREVRANGE", KEYS[1], "+", "-", "COUNT", 1)
if #head == 0 then return {0, 0} end
local first = tonumber(string.match(head[1][1], "^0%-(%d+)$"))
local last = tonumber(string.match(tail[1][1], "^0%-(%d+)$"))

local keep_from = last + 1 - retain
for _, cursor in ipairs(rcall("HVALS", KEYS[2])) do
  local c = tonumber(cursor) + 1
  if c < keep_from then keep_from = c end
end
local oldest_ref = rcall("ZRANGE", KEYS[3], 0, 0, "WITHSCORES")
if #oldest_ref > 0 and tonumber(oldest_ref[2]) < keep_from then
  keep_from = tonumber(oldest_ref[2])
end

local target = math.min(keep_from, first + max_delete)
if target <= first then return {0, keep_from} end
local deleted = rcall("XTRIM", KEYS[1], "MINID", "=", "0-" .. target)
return {deleted, keep_from}
