-- release: ARGV[4] reservation id, [5] retention ms. A held reservation is
-- released (or expired, if its time passed before it was swept); any other
-- status is returned unchanged for the caller to judge.
if not EP then return {'NOT_READY'} end
local rec = record(ARGV[4])
if not rec then return {'NOT_FOUND'} end
if rec.st == 'held' then
  if NOW >= rec.exp then
    finish(rec, 'expiry', 'expired', tonumber(ARGV[5]))
  else
    finish(rec, 'release', 'released', tonumber(ARGV[5]))
  end
end
return reply('RES', rec)
