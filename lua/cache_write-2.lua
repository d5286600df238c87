--[[
  cache_write-2.lua: a write (PrWr: BusRdX from I, BusUpgr from S, silent from E/M). Bumps the
  key's version, makes the caller the only holder (M, with a lease), removes every other
  holder and returns those whose lease had not run out: the caller must have each of them
  acknowledge an invalidation, or wait its lease out, before the write returns. Removed
  holders stay listed as "X:<lease_until_ms>:<mark>" until their lease ends (or
  cache_forget-1.lua after their acknowledgement): a later write must wait for them too, or it
  could return while an earlier invalidation is still on its way.

  KEYS[1]  value  hash  concord:<c>:cache:{<key>}:value  value, version, expire_at_ms
  KEYS[2]  dir    hash  concord:<c>:cache:{<key>}:dir    v, d, h:<node> (see cache_read-2.lua)

  ARGV[1]  node          the writer's node id
  ARGV[2]  now_ms        the writer's wall clock (unix ms)
  ARGV[3]  lease_ms      lease for the writer's M line (1..600000)
  ARGV[4]  value         the value's JSON text
  ARGV[5]  store         "1": write-through (store the value now); "0": write-back (the value
                         stays in the writer's dirty M line; d records its version)
  ARGV[6]  expire_at_ms  absolute expiry of the value (unix ms), "0" for none
  ARGV[7]  register      "1": the writer keeps an M line; "0": it caches nothing (its bus
                         subscription is down); "0" requires store "1"
  ARGV[8]  dir_ttl_ms    idle lifetime of the directory

  Reply: {version, {holder, lease_until_ms, holder, lease_until_ms, ...}}: every other node
  listed with a live lease (holders and nodes still being invalidated); lines <= version - 1
  must go.
  Errors (nothing written): "BADARG <what>".
]]
local rcall = redis.call

local node = ARGV[1]
local now = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local value = ARGV[4]
local store = ARGV[5] == "1"
local expire_at = tonumber(ARGV[6])
local register = ARGV[7] == "1"
local dir_ttl = tonumber(ARGV[8])
if type(node) ~= "string" or #node == 0 or #node > 64 then return redis.error_reply("BADARG node") end
if not now or now < 0 then return redis.error_reply("BADARG now_ms") end
if not lease or lease < 1 or lease > 600000 then return redis.error_reply("BADARG lease_ms") end
if type(value) ~= "string" or #value == 0 then return redis.error_reply("BADARG value") end
if not expire_at or expire_at < 0 then return redis.error_reply("BADARG expire_at_ms") end
if not store and not register then return redis.error_reply("BADARG write-back needs register") end
if not dir_ttl or dir_ttl < 1 then return redis.error_reply("BADARG dir_ttl_ms") end

--@include cache_dir
local dirv, _, listed = read_dir(KEYS[2])
local entries = {}
for _, e in ipairs(listed) do
  if e[2] ~= node then entries[#entries + 1] = {e[1], e[2], e[4]} end
end
if not dirv then dirv = tonumber(rcall("HGET", KEYS[1], "version") or "0") or 0 end
local version = dirv + 1
local others = {}
for _, e in ipairs(entries) do
  if e[3] and e[3] >= now then
    others[#others + 1] = e[2]; others[#others + 1] = e[3]
    rcall("HSET", KEYS[2], e[1], "X:" .. e[3] .. ":" .. dirv)
  else
    rcall("HDEL", KEYS[2], e[1])
  end
end

if store then
  rcall("DEL", KEYS[1])
  rcall("HSET", KEYS[1], "value", value, "version", version, "expire_at_ms", expire_at)
  if expire_at > 0 then rcall("PEXPIREAT", KEYS[1], expire_at) end
  rcall("HDEL", KEYS[2], "d")
else
  rcall("HSET", KEYS[2], "d", version)
end
if register then
  rcall("HSET", KEYS[2], "h:" .. node, "M:" .. (now + lease))
else
  rcall("HDEL", KEYS[2], "h:" .. node)
end
rcall("HSET", KEYS[2], "v", version)
rcall("PEXPIRE", KEYS[2], dir_ttl)
return {version, others}
