--[[
  cache_delete-2.lua: POST /cache/delete. Removes the value, bumps the version (a delete
  orders like a write: lines and fills up to it are stale) and keeps the directory (versions
  stay monotonic if the key is written again); every holder becomes "X:<lease>:<version>"
  (being invalidated, see cache_write-2.lua).
  The caller then sends an invalidation to each returned holder and waits for its
  acknowledgement or its lease.
  A key with no value (never written, already deleted or expired) and no dirty write-back
  copy writes nothing: the reply is {0, last version or 0, {}} and the caller answers 404.

  KEYS[1]  value  hash  concord:<c>:cache:{<key>}:value  value, version, expire_at_ms
  KEYS[2]  dir    hash  concord:<c>:cache:{<key>}:dir    v, d, h:<node>

  ARGV[1]  now_ms      wall clock (unix ms)
  ARGV[2]  dir_ttl_ms  idle lifetime of the directory tombstone

  Reply: {existed (1/0), version, {holder, lease_until_ms, ...}}
]]
local rcall = redis.call

local now = tonumber(ARGV[1])
local dir_ttl = tonumber(ARGV[2])
if not now then return redis.error_reply("BADARG now_ms") end
if not dir_ttl or dir_ttl < 1 then return redis.error_reply("BADARG dir_ttl_ms") end

--@include cache_dir
local dirv, dirty, listed = read_dir(KEYS[2])
local entries = {}
for _, e in ipairs(listed) do entries[#entries + 1] = {e[1], e[4] or 0} end
local existed = rcall("EXISTS", KEYS[1]) == 1 or dirty
-- Nothing to delete: a failed delete changes nothing (no directory or version is created).
-- Live M/E/S entries cannot exist without a value or a dirty copy unless the value expired,
-- and a holder serves no line past its expire_at_ms.
if not existed then return {0, dirv or 0, {}} end
if not dirv then dirv = tonumber(rcall("HGET", KEYS[1], "version") or "0") or 0 end
local version = dirv + 1
local out = {}
for _, e in ipairs(entries) do
  if e[2] >= now then
    out[#out + 1] = string.sub(e[1], 3); out[#out + 1] = e[2]
    rcall("HSET", KEYS[2], e[1], "X:" .. e[2] .. ":" .. version)
  else
    rcall("HDEL", KEYS[2], e[1])
  end
end
rcall("DEL", KEYS[1])
rcall("HDEL", KEYS[2], "d")
rcall("HSET", KEYS[2], "v", version)
rcall("PEXPIRE", KEYS[2], dir_ttl)
return {existed and 1 or 0, version, out}
