-- finish_if_final: an include (--#include finish_if_final) defining
--   finish_if_final(job, finished, active, now, job_id): the one place that
--   ends a job once every recipient is final. A queued or running job is
--   completed (finished_at, listed in `finished` for retention) and a
--   cancelled one is settled; either way the watchdog's `active` set no
--   longer lists it. Not while a retry's reset is under way (the job hash's
--   `retry`, producer/control.py): its counters still count the recipients
--   about to be set back to pending.
--   job: the job hash; finished, active: the sorted sets; now: epoch s;
--   job_id: the job's id (the sets' member).
--   Returns true if it ended the job, else false.
--#include sum_final
local function finish_if_final(job, finished, active, now, job_id)
  local state = redis.call('HGET', job, 'state')
  if not FINISHING[state] then return false end
  if redis.call('HEXISTS', job, 'retry') == 1 then return false end
  if final_count(job) < tonumber(redis.call('HGET', job, 'total')) then return false end
  if state ~= 'cancelled' then
    redis.call('HSET', job, 'state', 'completed', 'finished_at', now)
    redis.call('ZADD', finished, now, job_id)
  end
  redis.call('ZREM', active, job_id)
  return true
end
