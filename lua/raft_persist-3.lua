--[[
  Persists one Raft `Ready` of one node atomically, in the order the Raft core requires:
  snapshot, log entries (truncate a conflicting suffix, then append), hard state.

  KEYS[1]  concord:<cluster>:raft:{<node>}:hard      hash: term, vote, commit
  KEYS[2]  concord:<cluster>:raft:{<node>}:log       zset: score = entry index, member = encoded entry
  KEYS[3]  concord:<cluster>:raft:{<node>}:snapshot  hash: index, term, data (voters + state machine)

  ARGV[1]  snapshot mode: "none" | "replace" (received from the leader: the whole log goes)
                          | "compact" (taken locally: entries <= index go)
  ARGV[2]  snapshot index            (ignored when mode is "none")
  ARGV[3]  snapshot term
  ARGV[4]  snapshot data (binary)
  ARGV[5]  hard state present: "1" | "0"
  ARGV[6]  term
  ARGV[7]  vote ("" for none)
  ARGV[8]  commit index
  ARGV[9]  index of the first entry that follows (0 when none)
  ARGV[10..] encoded entries, consecutive indexes from ARGV[9]

  Reply: the number of entries now in the log.
]]
local rcall = redis.call
local mode = ARGV[1]
if mode == 'replace' or mode == 'compact' then
  local index = tonumber(ARGV[2])
  if not index then return redis.error_reply('BADARG snapshot index') end
  rcall('HSET', KEYS[3], 'index', ARGV[2], 'term', ARGV[3], 'data', ARGV[4])
  if mode == 'replace' then
    rcall('DEL', KEYS[2])
  else
    rcall('ZREMRANGEBYSCORE', KEYS[2], '-inf', index)
  end
elseif mode ~= 'none' then
  return redis.error_reply('BADARG snapshot mode')
end
local first = tonumber(ARGV[9])
if not first then return redis.error_reply('BADARG first index') end
if #ARGV >= 10 then
  rcall('ZREMRANGEBYSCORE', KEYS[2], first, '+inf')
  for i = 10, #ARGV do
    rcall('ZADD', KEYS[2], first + i - 10, ARGV[i])
  end
end
if ARGV[5] == '1' then
  rcall('HSET', KEYS[1], 'term', ARGV[6], 'vote', ARGV[7], 'commit', ARGV[8])
end
return rcall('ZCARD', KEYS[2])
