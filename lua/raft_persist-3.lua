#!lua flags=allow-oom
--[[
  Persists one Raft `Ready` of one node atomically, in the order the Raft core requires:
  snapshot, log entries (truncate a conflicting suffix, then append), hard state; then
  publishes the Ready's messages. A message is published only after every write before it
  succeeded, so nothing leaves the node that depends on state Redis has not stored (a vote,
  an append acknowledgement). `allow-oom`: Raft's own small writes must not fail because the
  queue filled Redis's memory.

  KEYS[1]  concord:<cluster>:raft:{<node>}:hard      hash: term, vote, commit, wseq
  KEYS[2]  concord:<cluster>:raft:{<node>}:log       list: encoded entries in index order; the
                                                    first is entry <snapshot index> + 1
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
  ARGV[10] n, the number of entries
  ARGV[11] "1" when this node has stored a hard state before (so KEYS[1] must exist), else "0"
  ARGV[12] the token (wseq) of the write this one follows; "none": no write may be stored yet;
           "": no check (a write-back). The node pipelines its writes on one connection, and a
           write runs only if the one before it was stored
  ARGV[13] this write's token (unique), stored as wseq
  ARGV[14 .. 13+n]        encoded entries, consecutive indexes from ARGV[9]; they go to RPUSH as
                          they came (no Lua table per entry)
  ARGV[14+n ..]           pairs: channel, message (bus frames to PUBLISH after the writes)

  Reply: the number of entries now in the log.
  Errors (nothing written): "BADARG <what>"; "GAP <what>" when the entries would not follow the
  stored log (a gap, or below the snapshot); "LOST <what>" when ARGV[11] is "1" and the hard
  state is gone (Redis lost this node's state without the connection dropping, e.g. FLUSHALL):
  the node then writes its whole state back from memory instead of starting a log with a gap;
  "SEQ <what>" when ARGV[12] is not the stored wseq (an earlier write of the pipeline failed, so
  this one must not run: its messages may speak for what that write carried).
]]
local rcall = redis.call
local mode = ARGV[1]
local first = tonumber(ARGV[9])
local n = tonumber(ARGV[10])
if mode ~= 'none' and mode ~= 'replace' and mode ~= 'compact' then return redis.error_reply('BADARG snapshot mode') end
if not first or not n or n < 0 or n ~= math.floor(n) or #ARGV < 13 + n or (#ARGV - 13 - n) % 2 ~= 0 or #ARGV[13] == 0 then
  return redis.error_reply('BADARG entry count or message pairs')
end
if ARGV[11] == '1' and rcall('EXISTS', KEYS[1]) == 0 then
  return redis.error_reply('LOST raft hard state is gone from redis')
end
if ARGV[12] ~= '' then
  local stored = rcall('HGET', KEYS[1], 'wseq')
  if (ARGV[12] == 'none' and stored) or (ARGV[12] ~= 'none' and stored ~= ARGV[12]) then
    return redis.error_reply('SEQ write ' .. ARGV[13] .. ' follows write ' .. ARGV[12] .. ', redis holds ' .. tostring(stored))
  end
end
-- The log list's first element is entry `base`, the one after the snapshot. Everything is
-- checked before the first write.
local base = tonumber(rcall('HGET', KEYS[3], 'index') or '0') + 1
local len = rcall('LLEN', KEYS[2])
local index
if mode ~= 'none' then
  index = tonumber(ARGV[2])
  if not index then return redis.error_reply('BADARG snapshot index') end
  if mode == 'compact' and index < base - 1 then return redis.error_reply('BADARG compaction below the snapshot') end
end
-- Where the log starts and how long it is once the snapshot is in.
local nbase, nlen = base, len
if mode == 'replace' then
  nbase, nlen = index + 1, 0
elseif mode == 'compact' then
  nbase, nlen = index + 1, math.max(0, len - (index + 1 - base))
end
if n > 0 and (first < nbase or first > nbase + nlen) then
  return redis.error_reply('GAP entries from ' .. first .. ' do not follow the stored log ' .. nbase .. '..' .. (nbase + nlen - 1))
end

if mode == 'replace' then
  rcall('DEL', KEYS[2])
elseif mode == 'compact' then
  rcall('LTRIM', KEYS[2], index + 1 - base, -1)
end
if mode ~= 'none' then
  rcall('HSET', KEYS[3], 'index', ARGV[2], 'term', ARGV[3], 'data', ARGV[4])
end
if n > 0 then
  -- A conflicting suffix goes (a new leader's entries replace it).
  if first < nbase + nlen then
    if first == nbase then rcall('DEL', KEYS[2]) else rcall('LTRIM', KEYS[2], 0, first - nbase - 1) end
  end
  -- One variadic RPUSH per 1000 entries (Lua's C stack bounds unpack).
  local i, last = 14, 13 + n
  while i <= last do
    local j = math.min(last, i + 999)
    rcall('RPUSH', KEYS[2], unpack(ARGV, i, j))
    i = j + 1
  end
end
if ARGV[5] == '1' then
  rcall('HSET', KEYS[1], 'term', ARGV[6], 'vote', ARGV[7], 'commit', ARGV[8], 'wseq', ARGV[13])
else
  rcall('HSET', KEYS[1], 'wseq', ARGV[13])
end
for i = 14 + n, #ARGV, 2 do
  rcall('PUBLISH', ARGV[i], ARGV[i + 1])
end
return rcall('LLEN', KEYS[2])
