-- adjust_settle (the ledger row's lock is held): ARGV[4...] groups of
-- variant, location, ledger_seq, ledger_on_hand. Settles each row with the
-- ledger (see settle): an adjustment left in progress by a crash is applied
-- if the ledger recorded it and dropped otherwise.
if not EP then return {'NOT_READY'} end
for i = 4, #ARGV, 4 do
  settle(ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]))
end
return {'OK'}
