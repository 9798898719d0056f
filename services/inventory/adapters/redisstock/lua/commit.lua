-- commit (last step, after the ledger recorded the sale): ARGV[4]
-- reservation id, [5] retention ms. Moves the units from reserved to
-- committed; a committed reservation is left as it is. Any other status
-- is returned for the caller to notice that Redis disagrees with the ledger.
if not EP then return {'NOT_READY'} end
local rec = record(ARGV[4])
if not rec then return {'NOT_FOUND'} end
if rec.st == 'held' or rec.st == 'committing' then
  finish(rec, 'commit', 'committed', tonumber(ARGV[5]))
end
return reply('RES', rec)
