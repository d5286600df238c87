--[[
  queue_produce-6.lua: store a batch of up to 1000 messages in one queue partition.

  Idempotent by message id: a message whose id (with dedup=1) was produced into this
  partition within the dedup window adds nothing and answers the first result. A message
  with delay_ms > 0 goes to the delayed set; queue_promote-3.lua moves it into the log
  when due. Otherwise it is appended to the partition log with stream ID 0-<seq>, where
  <seq> is the partition's sequence number (1, 2, 3, ...; produce order).

  KEYS[1]  log            stream   concord:<c>:q:{<topic>:<p>}:log
  KEYS[2]  meta           hash     ...:meta            (dseq = last delayed ref number)
  KEYS[3]  dedup          hash     ...:dedup           id -> first result ref
  KEYS[4]  dedup_exp      zset     ...:dedup:exp       id scored by its expiry (unix ms)
  KEYS[5]  delayed        zset     ...:delayed         "d<n>" scored by due time (unix ms)
  KEYS[6]  delayed_data   hash     ...:delayed:data    "d<n>" -> JSON {id,key,body,max}

  ARGV[1]  now_ms           current unix time in ms (the caller's clock; never TIME)
  ARGV[2]  dedup_window_ms  how long an id deduplicates (86400000 = 24 h), 1..31536000000
  ARGV[3]  n                number of messages, 1..1000
  then 6 arguments per message i (0-based), at ARGV[4 + 6*i ...]:
    +0 id             message id (non-empty, at most 1024 bytes)
    +1 dedup          "1": deduplicate by id (the user gave it); "0": id was generated
    +2 key            partitioning key ("" = none)
    +3 body           JSON text (stored as is)
    +4 delay_ms       0..2592000000 (30 days); 0 = ready now
    +5 max_attempts   1..10000

  Reply: an array of n arrays {status, ref}, in argument order:
    {"new", "<seq>"}      appended to the log as stream entry 0-<seq>
    {"delayed", "d<n>"}   waiting in the delayed set
    {"dup", ref}          id seen within the window; ref is the first result's ref
  Errors (nothing written): "BADARG <what>".

  Per call at most n + 100 expired dedup ids are pruned, so the dedup keys stay bounded by
  the ids produced within one window; a lookup also checks the expiry itself, so pruning
  lag never extends the window.
]]
local rcall = redis.call

local MAX_BATCH = 1000
local PRUNE_EXTRA = 100

--@include int_arg
--@include log_entry

-- Validate everything before the first write: an error reply leaves every key unchanged.
local now = int_arg(1, "now_ms", 0, 999999999999999)
local window = int_arg(2, "dedup_window_ms", 1, 31536000000)
local n = int_arg(3, "n", 1, MAX_BATCH)
if err then return redis.error_reply(err) end
if #ARGV ~= 3 + 6 * n then
  return redis.error_reply("BADARG expected " .. (3 + 6 * n) .. " arguments for n=" .. n .. ", got " .. #ARGV)
end
-- Messages stay in ARGV (no table per message); only the parsed delays are kept.
-- Error texts are built only on an error: this loop runs up to 1000 times per call.
local delays = {}
for i = 0, n - 1 do
  local b = 4 + 6 * i
  local delay_text, max_text = ARGV[b + 4], ARGV[b + 5]
  if delay_text == "0" then delays[i + 1] = 0
  else delays[i + 1] = int_arg(b + 4, "delay_ms of message " .. i, 0, 2592000000) end
  if max_text ~= "5" then int_arg(b + 5, "max_attempts of message " .. i, 1, 10000) end
  local id, dedup = ARGV[b], ARGV[b + 1]
  if #id == 0 or #id > 1024 then
    err = err or ("BADARG id of message " .. i .. " must be 1..1024 bytes")
  end
  if dedup ~= "0" and dedup ~= "1" then
    err = err or ("BADARG dedup of message " .. i .. " must be 0 or 1")
  end
  if err then return redis.error_reply(err) end
end

-- Prune a bounded number of expired dedup ids.
local expired = rcall("ZRANGEBYSCORE", KEYS[4], "-inf", now, "LIMIT", 0, n + PRUNE_EXTRA)
if #expired > 0 then
  rcall("ZREM", KEYS[4], unpack(expired))
  rcall("HDEL", KEYS[3], unpack(expired))
end

local reply = {}
for i = 1, n do
  local b = 4 + 6 * (i - 1)
  local id, dedup, key, body, max = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 5]
  local delay = delays[i]
  local first = nil
  if dedup == "1" then
    local expires = rcall("ZSCORE", KEYS[4], id)
    if expires and tonumber(expires) > now then
      first = rcall("HGET", KEYS[3], id)
    end
  end
  if first then
    reply[i] = {"dup", first}
  else
    local status, ref
    if delay > 0 then
      ref = "d" .. rcall("HINCRBY", KEYS[2], "dseq", 1)
      rcall("ZADD", KEYS[5], now + delay, ref)
      rcall("HSET", KEYS[6], ref, cjson.encode({
        id = id, key = key, body = body, max = max}))
      status = "delayed"
    else
      -- "0-*": Redis picks the next sequence after the stream's last ID, so the log itself
      -- is the authority on <seq>.
      -- Strings, not numbers: a Lua number becomes a string through sprintf("%.14g") on
      -- every call, which costs more than the XADD itself.
      local entry_id = rcall("XADD", KEYS[1], "0-*", unpack(log_entry(id, key, body, max)))
      ref = string.sub(entry_id, 3)
      status = "new"
    end
    if dedup == "1" then
      rcall("HSET", KEYS[3], id, ref)
      rcall("ZADD", KEYS[4], now + window, id)
    end
    reply[i] = {status, ref}
  end
end
return reply
