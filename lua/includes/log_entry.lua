-- Shared by the queue scripts (spliced in where a script says `--@include log_entry`).
-- log_entry(id, key, body, max): the fields of a partition log entry, as XADD takes them.
-- id and body always; key only when there is one and max only when it is not the default 5
-- (readers take `e.key or ""` and `e.max or 5`): the usual entry is two fields, which is what
-- XADD and every XRANGE of it cost. The node's plain produce writes the same fields.
local function log_entry(id, key, body, max)
  local f = {"id", id, "body", body}
  if key and key ~= "" then f[#f + 1] = "key"; f[#f + 1] = key end
  if max and tostring(max) ~= "5" then f[#f + 1] = "max"; f[#f + 1] = tostring(max) end
  return f
end
