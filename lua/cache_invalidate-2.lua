--[[
  cache_invalidate-2.lua: DELETE /cache/invalidate/{key}. Every holder becomes
  "X:<lease_until_ms>:<version>" (being invalidated, see cache_write-2.lua); the value stays. A dirty M holder with a live lease stays listed until it has written back
  (cache_writeback-2.lua, next "I"), so its flush is accepted. The caller then sends an
  invalidation to each returned holder and waits for its acknowledgement or its lease.

  KEYS[1]  value  hash  concord:<c>:cache:{<key>}:value  value, version, expire_at_ms
  KEYS[2]  dir    hash  concord:<c>:cache:{<key>}:dir    v, d, h:<node>

  ARGV[1]  now_ms      wall clock (unix ms)
  ARGV[2]  dir_ttl_ms  idle lifetime of the directory

  Reply: {version, {holder, lease_until_ms, flush (1 = dirty M: write back first, else 0), ...}}
  where version is the key's current version (0 if it has none): lines up to it must go.
]]
local rcall = redis.call

local now = tonumber(ARGV[1])
local dir_ttl = tonumber(ARGV[2])
if not now then return redis.error_reply("BADARG now_ms") end
if not dir_ttl or dir_ttl < 1 then return redis.error_reply("BADARG dir_ttl_ms") end

--@include cache_dir
local dirv, dirty, listed = read_dir(KEYS[2])
local entries = {}
for _, e in ipairs(listed) do entries[#entries + 1] = {e[2], e[3], e[4] or 0} end
if not dirv then dirv = tonumber(rcall("HGET", KEYS[1], "version") or "0") or 0 end

local out = {}
local kept_dirty = false
for _, e in ipairs(entries) do
  local h, st, lu = e[1], e[2], e[3]
  if dirty and st == "M" and lu >= now then
    kept_dirty = true
    out[#out + 1] = h; out[#out + 1] = lu; out[#out + 1] = 1
  elseif lu >= now then
    rcall("HSET", KEYS[2], "h:" .. h, "X:" .. lu .. ":" .. dirv)
    out[#out + 1] = h; out[#out + 1] = lu; out[#out + 1] = 0
  else
    rcall("HDEL", KEYS[2], "h:" .. h)
  end
end
if dirty and not kept_dirty then
  -- The dirty holder is gone: its copy is lost; the stored value becomes current.
  rcall("HDEL", KEYS[2], "d")
  if rcall("EXISTS", KEYS[1]) == 1 then rcall("HSET", KEYS[1], "version", dirv) end
end
if rcall("EXISTS", KEYS[2]) == 1 then rcall("PEXPIRE", KEYS[2], dir_ttl) end
return {dirv, out}
