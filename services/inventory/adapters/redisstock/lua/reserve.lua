-- reserve: ARGV[4] reservation id, [5] expires_ms, [6] customer id ('' for
-- none), [7] purchase limit (0 for none), [8] idempotency key,
-- [9] fingerprint of the request, [10] retention ms, then variant, quantity
-- pairs (distinct variants).
if not EP then return {'NOT_READY'} end
local id, exp, cus, limit, ikey, fp, retention =
  ARGV[4], tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9], tonumber(ARGV[10])

-- A retry gets the reservation its key made, whatever happened to it since.
local prev = redis.call('GET', kkey(ikey))
if prev then
  local rec = record(prev)
  if rec then
    if rec.fp ~= fp then return {'KEY_REUSED'} end
    if rec.st == 'held' and NOW >= rec.exp then finish(rec, 'expiry', 'expired', retention) end
    return reply('EXISTS', rec)
  end
end

local items = {}
for i = 11, #ARGV, 2 do items[#items + 1] = {v = ARGV[i], q = tonumber(ARGV[i + 1])} end

-- The purchase limit counts what the customer holds and bought.
if cus ~= '' and limit > 0 then
  for _, it in ipairs(items) do
    local held = tonumber(redis.call('HGET', ckey(cus), it.v)) or 0
    if held + it.q > limit then return {'LIMIT', it.v, limit, held} end
  end
end

-- All or nothing: every item must fit entirely at one location, the first
-- in configured order that can take it, before anything changes.
local short = {'OUT'}
for _, it in ipairs(items) do
  it.s = load(vkey(it.v))
  local best = 0
  for _, l in ipairs(LOCS) do
    local a = avail(it.s[l])
    if not it.l and a >= it.q then it.l = l end
    if a > best then best = a end
  end
  if not it.l then
    short[#short + 1] = it.v; short[#short + 1] = it.q; short[#short + 1] = best
  end
end
if #short > 1 then return short end

local placed, lines = {}, {}
for _, it in ipairs(items) do
  local sk = vkey(it.v)
  redis.call('HINCRBY', sk, it.l .. ':rs', it.q)
  it.s[it.l].rs = it.s[it.l].rs + it.q
  local ver = redis.call('HINCRBY', sk, 'ver', 1)
  if cus ~= '' then redis.call('HINCRBY', ckey(cus), it.v, it.q) end
  placed[#placed + 1] = it.v .. ',' .. it.l .. ',' .. it.q
  lines[#lines + 1] = line(it.v, it.l, it.q, it.s, ver)
end
local rec = {id = id, st = 'held', cus = cus, key = ikey, exp = exp, c = NOW, it = table.concat(placed, ';'), e = 0}
redis.call('HSET', rkey(id), 'st', 'held', 'cus', cus, 'key', ikey, 'exp', exp, 'c', NOW, 'it', rec.it, 'fp', fp)
redis.call('SET', kkey(ikey), id)
redis.call('ZADD', EXPIRY, exp, id)
redis.call('XADD', STREAM, '*', 'op', 'reservation', 'ep', EP, 't', NOW, 'res', id, 'cus', cus,
  'key', ikey, 'exp', exp, 'c', NOW, 'it', table.concat(lines, ';'))
return reply('OK', rec)
