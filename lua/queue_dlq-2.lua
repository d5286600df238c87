--[[
  queue_dlq-2.lua: list a group's dead-letter queue in one partition, oldest dead first.
  Read only.

  KEYS[1]  dlq    zset  concord:<c>:q:{<topic>:<p>}:g:<group>:dlq    seq scored by dead time
  KEYS[2]  data   hash  ...:g:<group>:data                           seq -> JSON copy

  ARGV[1]  limit    1..1000
  ARGV[2]  offset   0.. (skip that many of the oldest)

  Reply: {total, {{seq, id, body, key, attempts, last_delivery_ms, dead_ms}, ...}}:
  total, seq, attempts, last_delivery_ms and dead_ms are integers; id, body (JSON text),
  key ("" = none) bulk strings.
  Errors: "BADARG <what>".
]]
local rcall = redis.call

--@include int_arg

local limit = int_arg(1, "limit", 1, 1000)
local offset = int_arg(2, "offset", 0, 999999999999999)
if #ARGV ~= 2 then err = err or ("BADARG expected 2 arguments, got " .. #ARGV) end
if err then return redis.error_reply(err) end

local total = rcall("ZCARD", KEYS[1])
local out = {}
local seqs = rcall("ZRANGE", KEYS[1], offset, offset + limit - 1)
for _, seq in ipairs(seqs) do
  local raw = rcall("HGET", KEYS[2], seq)
  if raw then
    local e = cjson.decode(raw)
    out[#out + 1] = {tonumber(seq), e.id or "", e.body or "", e.key or "", tonumber(e.attempts),
      tonumber(e.last_delivery_ms), tonumber(e.dead_ms)}
  end
end
return {total, out}
