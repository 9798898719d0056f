-- prepare (first step of a commit): ARGV[4] reservation id, [5] grace ms,
-- [6] retention ms. A held, unexpired reservation becomes 'committing':
-- its units stay reserved and nothing but the commit's outcome may end it.
-- A reservation already committing is prepared again (a retried commit).
-- Its expiry score moves to now + grace, after which the sweeper treats a
-- commit that never finished as in doubt and asks the ledger.
if not EP then return {'NOT_READY'} end
local rec = record(ARGV[4])
if not rec then return {'NOT_FOUND'} end
if rec.st == 'held' then
  if NOW >= rec.exp then
    finish(rec, 'expiry', 'expired', tonumber(ARGV[6]))
    return reply('RES', rec)
  end
  redis.call('HSET', rkey(rec.id), 'st', 'committing', 'cat', NOW)
  rec.st = 'committing'
elseif rec.st ~= 'committing' then
  return reply('RES', rec)
end
redis.call('ZADD', EXPIRY, NOW + tonumber(ARGV[5]), rec.id)
local out = reply('PREPARED', rec)
out[#out + 1] = EP
return out
