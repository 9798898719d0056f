-- abort (the ledger decided a commit did not happen): ARGV[4] reservation
-- id, [5] retention ms. A committing or held reservation expires and
-- returns its units; anything else is left alone.
if not EP then return {'NOT_READY'} end
local rec = record(ARGV[4])
if not rec then return {'NOT_FOUND'} end
if rec.st == 'held' or rec.st == 'committing' then
  finish(rec, 'expiry', 'expired', tonumber(ARGV[5]))
end
return reply('RES', rec)
