-- record (read only): ARGV[4] reservation id. Returns the reservation as
-- reply does, with the epoch appended, or {'NOT_FOUND'}.
if not EP then return {'NOT_READY'} end
local rec = record(ARGV[4])
if not rec then return {'NOT_FOUND'} end
local out = reply('RES', rec)
out[#out + 1] = EP
return out
