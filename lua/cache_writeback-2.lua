--[[
  cache_writeback-2.lua: Flush. The M holder writes its dirty line back to Redis, then keeps
  M, drops to S (snooped BusRd) or leaves the directory (eviction, invalidate, shutdown, lost
  subscription). Accepted only while the caller is still the M holder of the current version,
  so a late flush can never overwrite a newer write.

  KEYS[1]  value  hash  concord:<c>:cache:{<key>}:value  value, version, expire_at_ms
  KEYS[2]  dir    hash  concord:<c>:cache:{<key>}:dir    v, d, h:<node>

  ARGV[1]  node          the flushing node's id
  ARGV[2]  version       the line's version
  ARGV[3]  value         the line's JSON text
  ARGV[4]  expire_at_ms  the value's absolute expiry (unix ms), "0" for none
  ARGV[5]  now_ms        wall clock (unix ms)
  ARGV[6]  next          "M" keep the line, "S" downgrade it, "I" leave the directory
  ARGV[7]  dir_ttl_ms    idle lifetime of the directory

  Reply: 1 written back; 0 refused (a newer write exists or the caller is no longer the M
  holder: its copy is superseded and must simply be dropped).
  Errors (nothing written): "BADARG <what>".
]]
local rcall = redis.call

local node = ARGV[1]
local version = tonumber(ARGV[2])
local value = ARGV[3]
local expire_at = tonumber(ARGV[4])
local now = tonumber(ARGV[5])
local nxt = ARGV[6]
local dir_ttl = tonumber(ARGV[7])
if type(node) ~= "string" or #node == 0 or #node > 64 then return redis.error_reply("BADARG node") end
if not version or version < 1 then return redis.error_reply("BADARG version") end
if type(value) ~= "string" or #value == 0 then return redis.error_reply("BADARG value") end
if not expire_at or expire_at < 0 then return redis.error_reply("BADARG expire_at_ms") end
if not now then return redis.error_reply("BADARG now_ms") end
if nxt ~= "M" and nxt ~= "S" and nxt ~= "I" then return redis.error_reply("BADARG next") end
if not dir_ttl or dir_ttl < 1 then return redis.error_reply("BADARG dir_ttl_ms") end

local entry = rcall("HGET", KEYS[2], "h:" .. node)
local dirv = tonumber(rcall("HGET", KEYS[2], "v") or "")
local st, lu
if entry then st, lu = string.match(entry, "^(%a):(%d+)") end
if st ~= "M" or dirv ~= version then
  return 0
end

rcall("DEL", KEYS[1])
if expire_at == 0 or expire_at > now then
  rcall("HSET", KEYS[1], "value", value, "version", version, "expire_at_ms", expire_at)
  if expire_at > 0 then rcall("PEXPIREAT", KEYS[1], expire_at) end
end
rcall("HDEL", KEYS[2], "d")
if nxt == "S" then
  rcall("HSET", KEYS[2], "h:" .. node, "S:" .. lu)
elseif nxt == "I" then
  rcall("HDEL", KEYS[2], "h:" .. node)
end
rcall("PEXPIRE", KEYS[2], dir_ttl)
return 1
