--[[
  cache_read-2.lua: a read miss (BusRd). Reads the value and, unless told not to, registers
  the caller in the key's directory with a lease, as E (no other valid holder) or S (others
  hold it; E and M holders are turned to S here and named in the reply so the caller can
  tell them). A dirty M holder elsewhere (write-back) must write back first: the reply names
  it and nothing changes; the caller asks it over the bus and runs this script again.

  KEYS[1]  value  hash  concord:<c>:cache:{<key>}:value  value (JSON text), version, expire_at_ms
  KEYS[2]  dir    hash  concord:<c>:cache:{<key>}:dir    v (last version), d (dirty version held
                                                         by the M holder, write-back only),
                                                         h:<node> -> "<M|E|S>:<lease_until_ms>" or
                                                         "X:<lease_until_ms>:<mark>" (being
                                                         invalidated: lines <= mark must go)

  ARGV[1]  node          the caller's node id
  ARGV[2]  now_ms        the caller's wall clock (unix ms)
  ARGV[3]  lease_ms      lease to grant (1..600000)
  ARGV[4]  register      "1": register the caller; "0": read only (its subscription is down)
  ARGV[5]  dir_ttl_ms    idle lifetime of the directory (keeps versions monotonic across deletes)

  Reply:
    {0}                                                   no value: not found, nothing registered
    {1, value, version, state, expire_at_ms, {node...}}   state "E", "S", "M" (the caller already
                                                          held M) or "I" (register "0"); the nodes
                                                          whose E/M entry was turned to S
    {2, holder, lease_until_ms}                           holder has a dirty M copy: flush it first
  Errors (nothing written): "BADARG <what>".
]]
local rcall = redis.call

local node = ARGV[1]
local now = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local register = ARGV[4] == "1"
local dir_ttl = tonumber(ARGV[5])
if type(node) ~= "string" or #node == 0 or #node > 64 then return redis.error_reply("BADARG node") end
if not now or now < 0 then return redis.error_reply("BADARG now_ms") end
if not lease or lease < 1 or lease > 600000 then return redis.error_reply("BADARG lease_ms") end
if not dir_ttl or dir_ttl < 1 then return redis.error_reply("BADARG dir_ttl_ms") end

local vals = rcall("HMGET", KEYS[1], "value", "version", "expire_at_ms")
--@include cache_dir
local dirv, dirty, listed = read_dir(KEYS[2])
local holders = {}   -- node -> {state, lease_until}
for _, e in ipairs(listed) do
  if e[3] then holders[e[2]] = {e[3], e[4]} else rcall("HDEL", KEYS[2], e[1]) end
end

-- A dirty M copy elsewhere is the newest value: it must reach Redis before anyone reads.
if dirty then
  for h, e in pairs(holders) do
    if e[1] == "M" and h ~= node and e[2] >= now then return {2, h, e[2]} end
  end
  -- Its holder is gone (lease over) or is the caller itself (restarted): that copy is lost.
  -- Drop the marker and the dead M entry, and stamp the stored value with the directory's
  -- version so that "value exists and no d" keeps meaning "value.version == v".
  rcall("HDEL", KEYS[2], "d")
  for h, e in pairs(holders) do
    if e[1] == "M" then rcall("HDEL", KEYS[2], "h:" .. h); holders[h] = nil end
  end
  if vals[1] and dirv then rcall("HSET", KEYS[1], "version", dirv); vals[2] = tostring(dirv) end
end

if not vals[1] then return {0} end
if not dirv then
  dirv = tonumber(vals[2]) or 0
  rcall("HSET", KEYS[2], "v", dirv)
end

local others, mine = 0, holders[node]
local downgraded = {}
for h, e in pairs(holders) do
  if h ~= node then
    if e[2] < now then
      rcall("HDEL", KEYS[2], "h:" .. h)
    elseif e[1] ~= "X" then
      others = others + 1
      if register and (e[1] == "E" or e[1] == "M") then
        rcall("HSET", KEYS[2], "h:" .. h, "S:" .. e[2])
        downgraded[#downgraded + 1] = h
      end
    end
  end
end

local state = "I"
if register then
  if others > 0 then state = "S"
  elseif mine and mine[1] == "M" and mine[2] >= now then state = "M"
  else state = "E" end
  rcall("HSET", KEYS[2], "h:" .. node, state .. ":" .. (now + lease))
end
rcall("PEXPIRE", KEYS[2], dir_ttl)
return {1, vals[1], vals[2], state, vals[3] or "0", downgraded}
