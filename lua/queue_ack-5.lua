--[[
  queue_ack-5.lua: acknowledge a batch of deliveries of one partition in one group.

  A receipt is accepted only while its delivery is the entry's current in-flight one: once
  the entry timed out (queue_redeliver-8.lua), was nacked, acked, or delivered again, the
  old receipt is not found. Acking removes every trace of the entry from the group.

  KEYS[1]  refs      zset  concord:<c>:q:{<topic>:<p>}:refs   "<seq>:<group>" / "L<n>:<group>"
  KEYS[2]  inflight  zset  ...:g:<group>:inflight             seq or lease "L<n>" scored by deadline
  KEYS[3]  retry     zset  ...:g:<group>:retry                seq scored by visible-at
  KEYS[4]  attempts  hash  ...:g:<group>:attempts             seq -> "<attempt>:<last_ms>:<delivery>",
                                                              "L<n>" -> "<ms>:<first>-<last>" or "<ms>:<seq>,...",
                                                              "#" (see consume and includes/lease_seqs.lua)
  KEYS[5]  data      hash  ...:g:<group>:data                 seq -> JSON copy

  ARGV[1]  group       group name (1..256 bytes)
  ARGV[2]  partition   this partition's number, 0..65535
  ARGV[3..] receipts   1..1000 receipts "<partition>:<seq>:<delivery>" or "<partition>:<seq>:L<n>",
                       or "<partition>:<first>-<last>:L<n>": the caller's short form of the
                       consecutive lease receipts <first>..<last> (first <= last), in that order;
                       1000 receipts at most in all

  A lease receipt is accepted while its seq is still in the lease's record (consume put it
  there; ack, nack and the visibility timeout take it out). The lease goes when it is empty.

  Reply: {acked, {not_found receipt, ...}}: acked an integer; not_found the receipts (in
  argument order, a short form's as its single receipts) that are malformed, of another
  partition, stale, or already acked.
  Errors (nothing written): "BADARG <what>".
]]
local rcall = redis.call

--@include lease_seqs

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
-- One pattern per receipt, and flat arrays rather than a table per receipt: this loop runs
-- up to 1000 times per call.
local cand_index, cand_seq, cand_delivery = {}, {}, {}
local by_lease, leases = {}, {}   -- lease -> {arg index, seq or "first-last", ...}; leases in first-seen order
local ranges = {}                 -- arg index of a short form -> {first, last}
local match = string.match
local total = 0
for i = 3, #ARGV do
  local p, seq, d = match(ARGV[i], "^(%d+):(%d+):(L?%d+)$")
  local upto
  if not p then p, seq, upto, d = match(ARGV[i], "^(%d+):(%d+)%-(%d+):(L%d+)$") end
  if p and #p <= 5 and #seq <= 15 and (p == pstr or tonumber(p) == partition) then
    if string.byte(d, 1) == 76 then          -- "L<n>": a first delivery in lease L<n>
      local first, last = tonumber(seq), upto and tonumber(upto)
      if #d <= 16 and (not upto or (#upto <= 15 and first <= last and last - first < 1000)) then
        local list = by_lease[d]
        if not list then list = {}; by_lease[d] = list; leases[#leases + 1] = d end
        list[#list + 1] = i
        if upto then
          list[#list + 1] = seq .. "-" .. upto
          ranges[i] = {first, last}
          total = total + last - first
        else
          list[#list + 1] = seq
        end
      end
    elseif #d <= 15 then
      local k = #cand_index + 1
      cand_index[k], cand_seq[k], cand_delivery[k] = i, seq, d
    end
  end
end
if n + total > 1000 then
  return redis.error_reply("BADARG expected 1..1000 receipts, got " .. (n + total))
end

local ok_index, ok_seqs = {}, {}
local lease_acked = 0
if #leases > 0 then
  local records = rcall("HMGET", KEYS[4], unpack(leases))
  local delta = 0
  for j, lease in ipairs(leases) do
    local ms, list = match(records[j] or "", "^(%d+):(.*)$")
    if ms then
      local named = by_lease[lease]          -- arg index, seq or "first-last", ...
      local named_seqs = {}
      for k = 2, #named, 2 do named_seqs[#named_seqs + 1] = named[k] end
      local pending, order, size, removed
      if table.concat(named_seqs, ",") == list then
        -- The receipts name exactly the lease's unacked entries, in order: the usual ack of a
        -- whole consumed batch (a new lease's range in its short form), decided with one
        -- comparison instead of a set per lease.
        size = 0
        for k = 1, #named, 2 do
          ok_index[named[k]] = true
          local range = ranges[named[k]]
          size = size + (range and range[2] - range[1] + 1 or 1)
        end
        removed = size
      else
        pending, order, removed = {}, lease_seqs(list), 0
        size = #order
        for _, s in ipairs(order) do pending[s] = true end
        for k = 1, #named, 2 do
          local i = named[k]
          local range = ranges[i]
          if range then
            -- A short form: each of its receipts on its own; `ok_seqs` tells which were taken.
            local taken = {}
            for seq = range[1], range[2] do
              local s = string.format("%d", seq)
              if pending[s] then
                pending[s] = nil
                taken[s] = true
                removed = removed + 1
              end
            end
            ok_seqs[i] = taken
          elseif pending[named[k + 1]] then
            pending[named[k + 1]] = nil
            ok_index[i] = true
            removed = removed + 1
          end
        end
      end
      if removed == size then
        rcall("HDEL", KEYS[4], lease)
        rcall("ZREM", KEYS[2], lease)
        rcall("ZREM", KEYS[1], lease .. ":" .. group)
        delta = delta - (size - 1)
      elseif removed > 0 then
        local rest = {}
        for _, s in ipairs(order) do if pending[s] then rest[#rest + 1] = s end end
        rcall("HSET", KEYS[4], lease, ms .. ":" .. table.concat(rest, ","))
        -- The lease's ref follows its first unacked entry, so trim frees what was acked.
        rcall("ZADD", KEYS[1], rest[1], lease .. ":" .. group)
        delta = delta - removed
      end
      lease_acked = lease_acked + removed
    end
  end
  if delta ~= 0 and rcall("HINCRBY", KEYS[4], "#", delta) <= 0 then rcall("HDEL", KEYS[4], "#") end
end

local done, refs = {}, {}
if #cand_seq > 0 then
  local states = rcall("HMGET", KEYS[4], unpack(cand_seq))
  local scores = rcall("ZMSCORE", KEYS[2], unpack(cand_seq))
  local taken = {}
  for j = 1, #cand_seq do
    local seq = cand_seq[j]
    local state = states[j]
    local cur = state and match(state, ":(%d+)$")
    -- In flight, current delivery, and not already acked by an earlier receipt of this call.
    if scores[j] and cur and tonumber(cur) == tonumber(cand_delivery[j]) and not taken[seq] then
      taken[seq] = true
      ok_index[cand_index[j]] = true
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
  local range = ranges[i]
  if range and not ok_index[i] then
    local p, d = match(ARGV[i], "^(%d+):"), match(ARGV[i], ":(L%d+)$")
    local taken = ok_seqs[i] or {}
    for seq = range[1], range[2] do
      local s = string.format("%d", seq)
      if not taken[s] then not_found[#not_found + 1] = p .. ":" .. s .. ":" .. d end
    end
  elseif not ok_index[i] then
    not_found[#not_found + 1] = ARGV[i]
  end
end
return {#done + lease_acked, not_found}
