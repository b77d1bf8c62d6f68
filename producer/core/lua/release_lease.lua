-- release_lease: give a chunk's lease back, only if it is still ours
-- (worker/store.py, ResultsStore.release_lease).
--
-- KEYS[1]: the chunk's lease
-- ARGV[1]: the lease token of the pass
-- Returns 1 if it deleted the lease, 0 if the lease was another's or gone.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
