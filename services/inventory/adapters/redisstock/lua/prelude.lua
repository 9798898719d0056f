-- Prelude of every inventory script (scripts.go prepends it). The contract
-- of each script is in scripts.go; what they share:
--   KEYS[1] the epoch key, STREAM the ledger stream, EXPIRY the expiry ZSET
--   ARGV[1] the prefix of every other key, ARGV[2] the configured locations
--   joined by ',' in the order reservations draw from them, ARGV[3] the
--   caller's clock in Unix milliseconds (scripts never read Redis's clock or
--   rely on key TTLs to decide anything).
-- A script that finds no epoch answers {'NOT_READY'} and changes nothing:
-- Redis restarted empty or lost data, and must be rebuilt from the ledger.
-- Every script that changes counters appends what it did to the stream in
-- the same atomic step. Scripts validate nothing the caller already
-- validated, and never fail after their first write (Redis does not roll a
-- script back).
local P = ARGV[1]
local LOCS = {}
for l in string.gmatch(ARGV[2], '[^,]+') do LOCS[#LOCS + 1] = l end
local NOW = tonumber(ARGV[3])
local EP = nil
do
  local v = redis.call('GET', KEYS[1])
  if v then EP = string.match(v, '^(%d+)') end
end

if EP then P = P .. 'g' .. EP .. ':' end
-- The generation's ledger stream, expiry schedule and adjustments in
-- progress. Scripts touch keys they do not declare, which standalone Redis
-- allows; a Redis Cluster would need the generation in a hash tag.
local STREAM, EXPIRY, ADJ = P .. 'ledger', P .. 'expiry', P .. 'adj'

local function vkey(v) return P .. 'v:' .. v end
local function rkey(id) return P .. 'r:' .. id end
local function kkey(k) return P .. 'k:' .. k end
local function ckey(c) return P .. 'c:' .. c end

-- load reads a variant's counters at every configured location:
-- oh on hand, rs reserved, cm committed, pd the on-hand count of an
-- adjustment in progress (nil when none).
local function load(sk)
  local f = {}
  for _, l in ipairs(LOCS) do
    f[#f + 1] = l .. ':oh'; f[#f + 1] = l .. ':rs'; f[#f + 1] = l .. ':cm'; f[#f + 1] = l .. ':pd'
  end
  local v = redis.call('HMGET', sk, unpack(f))
  local s = {}
  for i, l in ipairs(LOCS) do
    local b = 4 * (i - 1)
    s[l] = {oh = tonumber(v[b + 1]) or 0, rs = tonumber(v[b + 2]) or 0, cm = tonumber(v[b + 3]) or 0, pd = tonumber(v[b + 4])}
  end
  return s
end

-- avail is what a location can still promise. An adjustment in progress
-- caps on_hand at its new count until it is durable or abandoned, so a
-- lower count takes effect at once and a higher one only once recorded.
local function avail(c)
  local oh = c.oh
  if c.pd and c.pd < oh then oh = c.pd end
  return oh - c.rs - c.cm
end

-- line formats one changed variant-location for the stream:
-- variant,location,quantity,on_hand,reserved,committed,version with the
-- variant's counters summed over the configured locations after the change.
local function line(v, l, q, s, ver)
  local oh, rs, cm = 0, 0, 0
  for _, x in ipairs(LOCS) do oh = oh + s[x].oh; rs = rs + s[x].rs; cm = cm + s[x].cm end
  return v .. ',' .. l .. ',' .. q .. ',' .. oh .. ',' .. rs .. ',' .. cm .. ',' .. ver
end

-- move changes a variant's reserved and committed units at one location and
-- bumps its version; it returns the counters after and the new version.
local function move(v, l, drs, dcm)
  local sk = vkey(v)
  local s = load(sk)
  if not s[l] then
    -- A location no longer configured: its units still move, but count in
    -- no total.
    s[l] = {oh = 0, rs = 0, cm = 0}
  end
  if drs ~= 0 then redis.call('HINCRBY', sk, l .. ':rs', drs); s[l].rs = s[l].rs + drs end
  if dcm ~= 0 then redis.call('HINCRBY', sk, l .. ':cm', dcm); s[l].cm = s[l].cm + dcm end
  return s, redis.call('HINCRBY', sk, 'ver', 1)
end

-- record reads a reservation, or nil. it lists its placements as
-- variant,location,quantity joined by ';'.
local function record(id)
  local r = redis.call('HMGET', rkey(id), 'st', 'cus', 'key', 'exp', 'c', 'it', 'fp', 'e')
  if not r[1] then return nil end
  return {id = id, st = r[1], cus = r[2] or '', key = r[3] or '', exp = tonumber(r[4]) or 0,
    c = tonumber(r[5]) or 0, it = r[6] or '', fp = r[7] or '', e = tonumber(r[8]) or 0}
end

-- reply is how scripts return a reservation:
-- {tag, id, status, expires_ms, created_ms, placements, customer, key, ended_ms}.
local function reply(tag, rec)
  return {tag, rec.id, rec.st, tostring(rec.exp), tostring(rec.c), rec.it, rec.cus, rec.key, tostring(rec.e)}
end

-- finish ends a held (or committing) reservation: a commit moves its units
-- from reserved to committed; a release or expiry returns them and lowers
-- the customer's purchase tally. The record and its idempotency key are
-- kept for retention ms so that retries get the same answer.
local function finish(rec, op, st, retention)
  local lines = {}
  for v, l, q in string.gmatch(rec.it, '([^,;]+),([^,;]+),(%d+)') do
    q = tonumber(q)
    local s, ver
    if op == 'commit' then
      s, ver = move(v, l, -q, q)
    else
      s, ver = move(v, l, -q, 0)
      if rec.cus ~= '' then
        local left = redis.call('HINCRBY', ckey(rec.cus), v, -q)
        if left <= 0 then redis.call('HDEL', ckey(rec.cus), v) end
      end
    end
    lines[#lines + 1] = line(v, l, q, s, ver)
  end
  local rk = rkey(rec.id)
  redis.call('HSET', rk, 'st', st, 'e', NOW)
  redis.call('HDEL', rk, 'cat')
  redis.call('ZREM', EXPIRY, rec.id)
  redis.call('PEXPIRE', rk, retention)
  if rec.key ~= '' then redis.call('PEXPIRE', kkey(rec.key), retention) end
  redis.call('XADD', STREAM, '*', 'op', op, 'ep', EP, 't', NOW, 'res', rec.id, 'cus', rec.cus,
    'key', rec.key, 'exp', rec.exp, 'c', rec.c, 'it', table.concat(lines, ';'))
  rec.st = st
  rec.e = NOW
end

-- settle brings one variant-location up to the ledger: ledger_seq is the
-- number of the last adjustment the ledger recorded and ledger_oh its
-- count. The caller holds the ledger row's lock, so any adjustment still
-- marked in progress has finished (recorded or abandoned) and its cap goes.
local function settle(v, l, ledger_seq, ledger_oh)
  local sk = vkey(v)
  local f = redis.call('HMGET', sk, l .. ':as', l .. ':ps', l .. ':oh')
  local applied, pending, old = tonumber(f[1]) or 0, f[2], tonumber(f[3]) or 0
  if applied < ledger_seq then
    redis.call('HSET', sk, l .. ':oh', ledger_oh, l .. ':as', ledger_seq)
    local s = load(sk)
    if not s[l] then s[l] = {oh = ledger_oh, rs = 0, cm = 0} end
    local ver = redis.call('HINCRBY', sk, 'ver', 1)
    redis.call('XADD', STREAM, '*', 'op', 'adjustment', 'ep', EP, 't', NOW, 'seq', ledger_seq,
      'it', line(v, l, ledger_oh - old, s, ver))
  end
  if pending then
    redis.call('HDEL', sk, l .. ':pd', l .. ':ps')
    redis.call('ZREM', ADJ, v .. '|' .. l)
  end
end
