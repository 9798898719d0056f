-- adjust_begin (inside the ledger transaction that holds the rows' locks):
-- ARGV[4...] groups of variant, location, seq, on_hand, ledger_seq,
-- ledger_on_hand. Each row is first settled with the ledger; then, if every
-- changing row (seq > ledger_seq) keeps on_hand >= reserved + committed,
-- each is marked in progress with its new count, which caps what the
-- location promises until adjust_apply or a settle ends it. Otherwise
-- nothing is marked and {'CONFLICT', index, reserved, committed, ...}
-- (0-based row indexes) is returned. {'OK', epoch} on success.
if not EP then return {'NOT_READY'} end
local rows = {}
for i = 4, #ARGV, 6 do
  rows[#rows + 1] = {v = ARGV[i], l = ARGV[i + 1], seq = tonumber(ARGV[i + 2]), n = tonumber(ARGV[i + 3]),
    lseq = tonumber(ARGV[i + 4]), loh = tonumber(ARGV[i + 5])}
end
local conflicts = {'CONFLICT'}
for idx, r in ipairs(rows) do
  settle(r.v, r.l, r.lseq, r.loh)
  if r.seq > r.lseq then
    local f = redis.call('HMGET', vkey(r.v), r.l .. ':rs', r.l .. ':cm')
    local rs, cm = tonumber(f[1]) or 0, tonumber(f[2]) or 0
    if r.n < rs + cm then
      conflicts[#conflicts + 1] = idx - 1; conflicts[#conflicts + 1] = rs; conflicts[#conflicts + 1] = cm
    end
  end
end
if #conflicts > 1 then return conflicts end
for _, r in ipairs(rows) do
  if r.seq > r.lseq then
    redis.call('HSET', vkey(r.v), r.l .. ':pd', r.n, r.l .. ':ps', r.seq)
    redis.call('ZADD', ADJ, NOW, r.v .. '|' .. r.l)
  end
end
return {'OK', EP}
