-- adjust_apply (after the ledger recorded the adjustments): ARGV[4...]
-- groups of variant, location, seq, on_hand. Sets on_hand unless a later
-- adjustment was applied already, and ends the row's in-progress mark if
-- it is this adjustment's.
if not EP then return {'NOT_READY'} end
for i = 4, #ARGV, 4 do
  local v, l, seq, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local sk = vkey(v)
  local f = redis.call('HMGET', sk, l .. ':as', l .. ':ps', l .. ':oh')
  local applied, pending, old = tonumber(f[1]) or 0, tonumber(f[2]), tonumber(f[3]) or 0
  if applied < seq then
    redis.call('HSET', sk, l .. ':oh', n, l .. ':as', seq)
    local s = load(sk)
    if not s[l] then s[l] = {oh = n, rs = 0, cm = 0} end
    local ver = redis.call('HINCRBY', sk, 'ver', 1)
    redis.call('XADD', STREAM, '*', 'op', 'adjustment', 'ep', EP, 't', NOW, 'seq', seq,
      'it', line(v, l, n - old, s, ver))
  end
  if pending == seq then
    redis.call('HDEL', sk, l .. ':pd', l .. ':ps')
    redis.call('ZREM', ADJ, v .. '|' .. l)
  end
end
return {'OK'}
