--[[
  Registers (or refreshes) one node in the cluster's member registry.

  KEYS[1]  concord:<cluster>:{members}:<id>   hash: id, advertise, started_ms, seen_ms
  KEYS[2]  concord:<cluster>:{members}        set of node ids ever registered

  Both keys share the hash tag {members}, so the script runs on Redis Cluster (one slot).

  ARGV[1]  node id
  ARGV[2]  advertise URL
  ARGV[3]  start time (unix ms)
  ARGV[4]  now (unix ms)
  ARGV[5]  TTL of the registration (ms); a node that stops refreshing disappears after it

  Reply: the number of members in KEYS[2] after the call.
]]
local rcall = redis.call
local ttl = tonumber(ARGV[5])
if not ttl or ttl <= 0 then
  return redis.error_reply("ERR ttl must be a positive number of ms")
end
rcall('HSET', KEYS[1], 'id', ARGV[1], 'advertise', ARGV[2], 'started_ms', ARGV[3], 'seen_ms', ARGV[4])
rcall('PEXPIRE', KEYS[1], ttl)
rcall('SADD', KEYS[2], ARGV[1])
return rcall('SCARD', KEYS[2])
