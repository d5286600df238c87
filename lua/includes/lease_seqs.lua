-- Shared by the queue scripts (spliced in where a script says `--@include lease_seqs`).
-- lease_seqs(list): the entries of a lease record's list, as an array of seq strings in
-- order. queue_consume-8 writes a new lease's list as the range "<first>-<last>" (a lease
-- is a contiguous run of the log); once an entry leaves the lease (ack, nack), the rest is
-- written as "<seq>,<seq>,...". A lease holds at most 100 entries (LEASE_MAX in consume).
local function lease_seqs(list)
  local out = {}
  local first, last = string.match(list, "^(%d+)%-(%d+)$")
  if first then
    for s = tonumber(first), math.min(tonumber(last), tonumber(first) + 999) do
      out[#out + 1] = string.format("%d", s)
    end
  else
    for s in string.gmatch(list, "%d+") do out[#out + 1] = s end
  end
  return out
end
