-- Shared by the queue scripts (spliced in where a script says `--@include last_seq`).
-- last_seq(log): the partition log's last generated sequence number (0 before the first
-- produce). The stream remembers it also when trimmed empty, so no copy is kept elsewhere
-- (a plain produce is then a bare XADD, without a script).
local function last_seq(log)
  if redis.call("EXISTS", log) == 0 then return 0 end
  local info = redis.call("XINFO", "STREAM", log)
  for i = 1, #info, 2 do
    if info[i] == "last-generated-id" then
      return tonumber(string.match(info[i + 1], "^0%-(%d+)$")) or 0
    end
  end
  return 0
end
