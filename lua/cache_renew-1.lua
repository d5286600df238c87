--[[
  cache_renew-1.lua: extends the lease of a line the caller still holds at the current
  version. A holder removed by a write, invalidate or delete is not renewed: its line is stale.

  KEYS[1]  dir  hash  concord:<c>:cache:{<key>}:dir  v, d, h:<node> -> "<state>:<lease_until_ms>"

  ARGV[1]  node      the holder's node id
  ARGV[2]  version   the version of the holder's line
  ARGV[3]  now_ms    the holder's wall clock (unix ms)
  ARGV[4]  lease_ms  new lease from now (1..600000)

  Reply: the holder's state in the directory ("M", "E" or "S") when renewed; 0 when the
  caller holds no entry for this version (its line must go to I).
  Errors (nothing written): "BADARG <what>".
]]
local rcall = redis.call

local node = ARGV[1]
local version = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
if type(node) ~= "string" or #node == 0 or #node > 64 then return redis.error_reply("BADARG node") end
if not version then return redis.error_reply("BADARG version") end
if not now then return redis.error_reply("BADARG now_ms") end
if not lease or lease < 1 or lease > 600000 then return redis.error_reply("BADARG lease_ms") end

local entry = rcall("HGET", KEYS[1], "h:" .. node)
if not entry or tonumber(rcall("HGET", KEYS[1], "v") or "") ~= version then return 0 end
local st = string.match(entry, "^(%a):")
if not st or st == "X" then return 0 end
rcall("HSET", KEYS[1], "h:" .. node, st .. ":" .. (now + lease))
return st
