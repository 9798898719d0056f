-- stock (read only): ARGV[4...] variant ids. Returns {'OK', then per
-- variant: per configured location on_hand, reserved, committed, the count
-- of an adjustment in progress (-1 for none); then the variant's version}.
if not EP then return {'NOT_READY'} end
local out = {'OK'}
for i = 4, #ARGV do
  local sk = vkey(ARGV[i])
  local s = load(sk)
  for _, l in ipairs(LOCS) do
    local c = s[l]
    out[#out + 1] = c.oh; out[#out + 1] = c.rs; out[#out + 1] = c.cm; out[#out + 1] = c.pd or -1
  end
  out[#out + 1] = tonumber(redis.call('HGET', sk, 'ver')) or 0
end
return out
