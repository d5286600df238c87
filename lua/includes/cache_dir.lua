-- Shared by the cache scripts (spliced in where a script says `--@include cache_dir`).
-- read_dir(dir_key): the MESI directory of one key. Returns
--   dirv     the "v" field (last version) as a number, or nil;
--   dirty    the "d" field (version of a dirty write-back copy) as a number, or nil;
--   entries  one {field, node, state, lease_until} per "h:<node>" field, in hash order;
--            state and lease_until are nil when the value is malformed.
local function read_dir(dir_key)
  local dir = rcall("HGETALL", dir_key)
  local dirv, dirty
  local entries = {}
  for i = 1, #dir, 2 do
    local f, val = dir[i], dir[i + 1]
    if f == "v" then dirv = tonumber(val)
    elseif f == "d" then dirty = tonumber(val)
    elseif string.sub(f, 1, 2) == "h:" then
      local st, lu = string.match(val, "^(%a):(%d+)")
      entries[#entries + 1] = {f, string.sub(f, 3), st, tonumber(lu)}
    end
  end
  return dirv, dirty, entries
end
