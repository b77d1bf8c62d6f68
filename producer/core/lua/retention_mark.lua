-- retention_mark: the first step of a job's removal
-- (worker/background/retention.py, remove_job): checks that the job has
-- still ended, ended before the cutoff and (cancelled) has every recipient
-- settled, then sets `removing` on the job hash: from then on a retry finds
-- no job.
--
-- KEYS[1]: the job hash
-- KEYS[2]: the finished set
-- KEYS[3]: the jobs index
-- KEYS[4]: the scheduled set
-- KEYS[5]: the active set
-- ARGV[1]: the job id
-- ARGV[2]: the cutoff (epoch s)
-- ARGV[3]: the cutoff for a cancelled job whose recipients are not all final
-- Returns {'remove', total, chunk_size} once the job is marked (or was
-- already), else {why}: 'gone' (index entries dropped), 'open' (reopened by
-- a retry: dropped from finished until it ends again), 'later' (ended again
-- after the cutoff: rescored), 'unsettled' (a cancel sweep still to finish).
--#include sum_final
local job, id = KEYS[1], ARGV[1]
local h = redis.call('HMGET', job, 'state', 'finished_at', 'total', 'chunk_size', 'removing')
local state, finished = h[1], h[2]
if not state then
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
  return {'gone'}
end
if not h[5] then
  if not ENDED[state] or not finished then
    redis.call('ZREM', KEYS[2], id)
    return {'open'}
  end
  if tonumber(finished) > tonumber(ARGV[2]) then
    redis.call('ZADD', KEYS[2], finished, id)
    return {'later'}
  end
  if final_count(job) < tonumber(h[3]) and tonumber(finished) > tonumber(ARGV[3]) then
    return {'unsettled'}
  end
  redis.call('HSET', job, 'removing', '1')
end
return {'remove', h[3], h[4] or ''}
