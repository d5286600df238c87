--[[
  cache_release-1.lua: a node forgets a clean line (eviction, lost subscription, shutdown):
  its directory entry goes, so writers need neither its acknowledgement nor its lease.
  A dirty M entry is not released here (cache_writeback-2.lua with next "I" does that).

  KEYS[1]  dir  hash  concord:<c>:cache:{<key>}:dir  v, d, h:<node>

  ARGV[1]  node     the node's id
  ARGV[2]  version  the version of the line it drops

  Reply: 1 removed, 0 nothing to remove (no entry, another version, or a dirty M entry).
]]
local rcall = redis.call

local node = ARGV[1]
local version = tonumber(ARGV[2])
if type(node) ~= "string" or #node == 0 or #node > 64 then return redis.error_reply("BADARG node") end
if not version then return redis.error_reply("BADARG version") end
local entry = rcall("HGET", KEYS[1], "h:" .. node)
if not entry or tonumber(rcall("HGET", KEYS[1], "v") or "") ~= version then return 0 end
if string.sub(entry, 1, 1) == "M" and rcall("HEXISTS", KEYS[1], "d") == 1 then return 0 end
rcall("HDEL", KEYS[1], "h:" .. node)
return 1
