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

-- Parse every receipt, then look all of them up in two commands (HMGET, ZMSCORE) and
-- write in one variadic command per key: a batch of 1000 costs 7 calls, not 7000.
local candidates = {}       -- {arg index, seq, delivery}
local seqs = {}
for i = 3, #ARGV do
  local p, seq, d = string.match(ARGV[i], "^(%d+):(%d+):(%d+)$")
  if p and #p <= 5 and #seq <= 15 and #d <= 15 and tonumber(p) == partition then
    candidates[#candidates + 1] = {i, seq, d}
    seqs[#seqs + 1] = seq
  end
end

local ok_index = {}
local done, refs = {}, {}
if #seqs > 0 then
  local states = rcall("HMGET", KEYS[4], unpack(seqs))
  local scores = rcall("ZMSCORE", KEYS[2], unpack(seqs))
  local taken = {}
  for j, c in ipairs(candidates) do
    local seq = c[2]
    local state = states[j]
    local cur = state and string.match(state, ":(%d+)$")
    -- In flight, current delivery, and not already acked by an earlier receipt of this call.
    if scores[j] and cur and tonumber(cur) == tonumber(c[3]) and not taken[seq] then
      taken[seq] = true
      ok_index[c[1]] = true
      done[#done + 1] = seq
      refs[#refs + 1] = seq .. ":" .. group
    end
  end
end
if #done > 0 then
  rcall("ZREM", KEYS[2], unpack(done))
  rcall("ZREM", KEYS[3], unpack(done))
  rcall("HDEL", KEYS[4], unpack(done))
  rcall("HDEL", KEYS[5], unpack(done))
  rcall("ZREM", KEYS[1], unpack(refs))
end

local not_found = {}
for i = 3, #ARGV do
  if not ok_index[i] then not_found[#not_found + 1] = ARGV[i] end
end
return {#done, not_found}
