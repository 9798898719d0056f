-- adjust_abort (the ledger transaction failed before committing):
-- ARGV[4...] groups of variant, location, seq. Ends the in-progress mark of
-- each row if it is still this adjustment's.
if not EP then return {'NOT_READY'} end
for i = 4, #ARGV, 3 do
  local v, l, seq = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  if tonumber(redis.call('HGET', vkey(v), l .. ':ps')) == seq then
    redis.call('HDEL', vkey(v), l .. ':pd', l .. ':ps')
    redis.call('ZREM', ADJ, v .. '|' .. l)
  end
end
return {'OK'}
