--[[
  cache_forget-1.lua: after nodes acknowledged an invalidation that told them to drop every
  line up to `up_to`, their "X:<lease_until_ms>:<mark>" entries with mark <= up_to are no
  longer needed: later writers need not wait for them. Entries that are not X (the node
  registered again since) or carry a higher mark (a newer invalidation is on its way) stay.

  KEYS[1]  dir  hash  concord:<c>:cache:{<key>}:dir  v, d, h:<node>

  ARGV[1]   up_to   the version the acknowledged invalidation covered
  ARGV[2..] nodes   the nodes that acknowledged it (1..1000)

  Reply: the number of entries removed.
]]
local rcall = redis.call

local up_to = tonumber(ARGV[1])
if not up_to then return redis.error_reply("BADARG up_to") end
if #ARGV < 2 or #ARGV > 1001 then return redis.error_reply("BADARG expected 1..1000 nodes") end
local removed = 0
for i = 2, #ARGV do
  local f = "h:" .. ARGV[i]
  local entry = rcall("HGET", KEYS[1], f)
  local mark = entry and tonumber(string.match(entry, "^X:%d+:(%d+)$") or "")
  if mark and mark <= up_to then
    rcall("HDEL", KEYS[1], f)
    removed = removed + 1
  end
end
return removed
