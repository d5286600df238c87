--[[
  queue_ack-5.lua: acknowledge a batch of deliveries of one partition in one group.

  A receipt is accepted only while its delivery is the entry's current in-flight one: once
  the entry timed out (queue_redeliver-8.lua), was nacked, acked, or delivered again, the
  old receipt is not found. Acking removes every trace of the entry from the group.

  KEYS[1]  refs      zset  concord:<c>:q:{<topic>:<p>}:refs   "<seq>:<group>" scored by seq
  KEYS[2]  inflight  zset  ...:g:<group>:inflight             seq scored by deadline
  KEYS[3]  retry     zset  ...:g:<group>:retry                seq scored by visible-at
  KEYS[4]  attempts  hash  ...:g:<group>:attempts             seq -> "<attempt>:<last_ms>:<delivery>"
  KEYS[5]  data      hash  ...:g:<group>:data                 seq -> JSON copy

  ARGV[1]  group       group name (1..256 bytes)
  ARGV[2]  partition   this partition's number, 0..65535
  ARGV[3..] receipts   1..1000 receipts "<partition>:<seq>:<delivery>"

  Reply: {acked, {not_found receipt, ...}}: acked an integer; not_found the receipts (in
  argument order) that are malformed, of another partition, stale, or already acked.
  Errors (nothing written): "BADARG <what>".
]]
local rcall = redis.call

local group = ARGV[1]
local pstr = ARGV[2]
if type(group) ~= "string" or #group == 0 or #group > 256 then
  return redis.error_reply("BADARG group must be 1..256 bytes")
end
if type(pstr) ~= "string" or not string.match(pstr, "^%d+$") or #pstr > 5 or tonumber(pstr) > 65535 then
  return redis.error_reply("BADARG partition must be in [0, 65535]")
end
local n = #ARGV - 2
if n < 1 or n > 1000 then
  return redis.error_reply("BADARG expected 1..1000 receipts, got " .. n)
end
local partition = tonumber(pstr)

local acked, not_found = 0, {}
for i = 3, #ARGV do
  local receipt = ARGV[i]
  local p, seq, d = string.match(receipt, "^(%d+):(%d+):(%d+)$")
  local ok = false
  if p and #p <= 5 and #seq <= 15 and tonumber(p) == partition
      and rcall("ZSCORE", KEYS[2], seq) then
    local state = rcall("HGET", KEYS[4], seq)
    local cur = state and string.match(state, ":(%d+)$")
    if cur and tonumber(cur) == tonumber(d) then
      rcall("ZREM", KEYS[2], seq)
      rcall("ZREM", KEYS[3], seq)
      rcall("HDEL", KEYS[4], seq)
      rcall("HDEL", KEYS[5], seq)
      rcall("ZREM", KEYS[1], seq .. ":" .. group)
      ok = true
    end
  end
  if ok then acked = acked + 1 else not_found[#not_found + 1] = receipt end
end
return {acked, not_found}
