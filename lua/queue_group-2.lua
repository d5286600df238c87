--[[
  queue_group-2.lua: register a consumer group in one partition (idempotent).

  A group receives every message produced after its first use. The node runs this on every
  partition of a topic when it first sees a group there (queue_consume-8.lua does the same
  for the one partition it reads), so messages produced meanwhile to partitions the group
  has not read yet are not skipped.

  KEYS[1]  log      stream concord:<c>:q:{<topic>:<p>}:log     (its last generated ID)
  KEYS[2]  groups   hash  ...:groups                        group -> cursor

  ARGV[1]  group    group name (1..256 bytes)

  Reply: {created, cursor}: created 1 if this call registered the group, else 0; cursor
  the group's last delivered sequence number (integers).
  Errors (nothing written): "BADARG <what>".
]]
local rcall = redis.call

--@include last_seq

local group = ARGV[1]
if #ARGV ~= 1 or type(group) ~= "string" or #group == 0 or #group > 256 then
  return redis.error_reply("BADARG expected 1 argument: group (1..256 bytes)")
end
local cursor = rcall("HGET", KEYS[2], group)
if cursor then return {0, tonumber(cursor)} end
cursor = last_seq(KEYS[1])
rcall("HSET", KEYS[2], group, string.format("%d", cursor))
return {1, cursor}
