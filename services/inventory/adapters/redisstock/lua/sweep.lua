-- sweep: ARGV[4] most reservations to look at, [5] grace ms, [6] retention
-- ms. Expires held reservations whose time passed; a committing one whose
-- grace passed is in doubt: its score moves on by grace and its id is
-- returned for the caller to settle with the ledger. Safe to run in every
-- replica at once: each due reservation is handled by one call.
-- Returns {'OK', epoch, looked at, expired, in-doubt ids...}.
if not EP then return {'NOT_READY'} end
local ids = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[4]))
local expired, out = 0, {'OK', EP, #ids, 0}
for _, id in ipairs(ids) do
  local rec = record(id)
  if rec and rec.st == 'held' then
    finish(rec, 'expiry', 'expired', tonumber(ARGV[6]))
    expired = expired + 1
  elseif rec and rec.st == 'committing' then
    redis.call('ZADD', EXPIRY, NOW + tonumber(ARGV[5]), id)
    out[#out + 1] = id
  else
    redis.call('ZREM', EXPIRY, id)
  end
end
out[4] = expired
return out
