-- mark_chunk_done: record that a chunk has nothing left to send (its bit in
-- the job's done bitmap), only while the job is in the run the pass read
-- (worker/store.py, ResultsStore.mark_chunk_done). A chunk with nothing left
-- may be the job's last: a pass that found nothing to send (the job's last
-- commit landed while it was paused, say) ends the job (finish_if_final).
--
-- KEYS[1]: the job hash
-- KEYS[2]: the job's done bitmap
-- KEYS[3]: the finished set
-- KEYS[4]: the active set
-- ARGV[1]: the job's run the pass read
-- ARGV[2]: the chunk number
-- ARGV[3]: now (epoch s)
-- ARGV[4]: the job id
-- Returns 1 if it marked the chunk, 0 if a retry started another run.
--#include finish_if_final
if tonumber(redis.call('HGET', KEYS[1], 'run') or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('SETBIT', KEYS[2], ARGV[2], 1)
finish_if_final(KEYS[1], KEYS[3], KEYS[4], ARGV[3], ARGV[4])
return 1
