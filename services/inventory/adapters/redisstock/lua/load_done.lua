-- load_done (last step of a rebuild): ARGV[4] the load's token, [5] the
-- epoch value to set. Sets the epoch only if the token the load wrote
-- first is still there, so that a Redis that restarted during the load
-- (and lost what was written before) is not declared ready.
if redis.call('GET', ARGV[1] .. 'loading') ~= ARGV[4] then return {'LOST'} end
redis.call('DEL', ARGV[1] .. 'loading')
redis.call('SET', KEYS[1], ARGV[5])
return {'OK'}
