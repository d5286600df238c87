-- Shared by the queue scripts (spliced in where a script says `--@include int_arg`).
-- int_arg(i, name, lo, hi): ARGV[i] as an integer in [lo, hi]; on the first bad argument `err`
-- is set to a "BADARG ..." message naming it, so a script checks every argument before writing.
local err
local function int_arg(i, name, lo, hi)
  local s = ARGV[i]
  if type(s) ~= "string" or not string.match(s, "^%d+$") or #s > 15 then
    err = err or ("BADARG " .. name .. " must be a non-negative integer")
    return 0
  end
  local n = tonumber(s)
  if n < lo or n > hi then
    err = err or ("BADARG " .. name .. " must be in [" .. lo .. ", " .. hi .. "]")
    return 0
  end
  return n
end
