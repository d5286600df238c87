--[[
  queue_status-8.lua: counts of one partition and, optionally, one group in it. Read only.
  The node calls it once per (partition, group) pair, pipelined.

  KEYS[1]  log       stream  concord:<c>:q:{<topic>:<p>}:log
  KEYS[2]  meta      hash    ...:meta
  KEYS[3]  delayed   zset    ...:delayed
  KEYS[4]  groups    hash    ...:groups                 group -> cursor
  KEYS[5]  inflight  zset    ...:g:<group>:inflight
  KEYS[6]  retry     zset    ...:g:<group>:retry
  KEYS[7]  dlq       zset    ...:g:<group>:dlq
  KEYS[8]  attempts  hash    ...:g:<group>:attempts     "#": entries in leases beyond one per lease

  ARGV[1]  now_ms   current unix time in ms
  ARGV[2]  group    group name, or "" for the partition's counts only (group counts are 0)

  Reply: 11 integers
    {last_seq, log_length, delayed, delayed_due,
     group_known, cursor, backlog, retry_due, retry_waiting, inflight, dead}
  backlog = log entries the group has not received yet (last_seq - cursor); the group's
  ready count is backlog + retry_due.
  Errors: "BADARG <what>".
]]
local rcall = redis.call

--@include last_seq

local now = ARGV[1]
if #ARGV ~= 2 or type(now) ~= "string" or not string.match(now, "^%d+$") or #now > 15 then
  return redis.error_reply("BADARG expected 2 arguments: now_ms (integer), group")
end
if #ARGV[2] > 256 then return redis.error_reply("BADARG group must be at most 256 bytes") end

local last = last_seq(KEYS[1])
local reply = {
  last, rcall("XLEN", KEYS[1]), rcall("ZCARD", KEYS[3]),
  rcall("ZCOUNT", KEYS[3], "-inf", now),
  0, 0, 0, 0, 0, 0, 0,
}
if ARGV[2] ~= "" then
  local cursor = rcall("HGET", KEYS[4], ARGV[2])
  if cursor then
    cursor = tonumber(cursor)
    local retry_due = rcall("ZCOUNT", KEYS[6], "-inf", now)
    reply[5] = 1
    reply[6] = cursor
    reply[7] = last - cursor
    reply[8] = retry_due
    reply[9] = rcall("ZCARD", KEYS[6]) - retry_due
    -- A lease of n entries is one in-flight member; "#" adds the other n - 1.
    reply[10] = rcall("ZCARD", KEYS[5]) + tonumber(rcall("HGET", KEYS[8], "#") or "0")
  end
  reply[11] = rcall("ZCARD", KEYS[7])
end
return reply
