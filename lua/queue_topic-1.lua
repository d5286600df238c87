--[[
  queue_topic-1.lua: create a topic in the registry, unless it exists or the registry is full.

  Every node tracks every topic (owner timers, placement), so the number of topics is bounded:
  a topic beyond the bound is refused rather than created and then left without timers.

  KEYS[1]  topics   hash  concord:<c>:q:topics   topic -> partition count

  ARGV[1]  topic        topic name (1..256 bytes)
  ARGV[2]  partitions   1..256, used only when the topic is created
  ARGV[3]  max_topics   1..1000000

  Reply: {status, partitions, topics}: status 1 created, 0 existed (partitions = its count),
  -1 refused because `topics` already holds max_topics topics (partitions = 0).
  Errors (nothing written): "BADARG <what>".
]]
local rcall = redis.call

--@include int_arg

local topic = ARGV[1]
local partitions = int_arg(2, "partitions", 1, 256)
local max_topics = int_arg(3, "max_topics", 1, 1000000)
if #ARGV ~= 3 then err = err or ("BADARG expected 3 arguments, got " .. #ARGV) end
if type(topic) ~= "string" or #topic == 0 or #topic > 256 then
  err = err or "BADARG topic must be 1..256 bytes"
end
if err then return redis.error_reply(err) end

local existing = rcall("HGET", KEYS[1], topic)
local count = rcall("HLEN", KEYS[1])
if existing then return {0, tonumber(existing), count} end
if count >= max_topics then return {-1, 0, count} end
rcall("HSET", KEYS[1], topic, ARGV[2])
return {1, partitions, count + 1}
