-- retention_backfill: list the jobs that the index sets lack
-- (worker/background/retention.py, backfill): every ended job not in
-- `finished` yet, and every queued or running job, and every cancelled job
-- whose sweep has not settled it, not in `active` (as active now, so that
-- the watchdog, worker/background/watchdog.py, watches jobs older than it
-- too).
--
-- KEYS[1]: the finished set
-- KEYS[2]: the active set
-- KEYS[3..]: one job hash per id, in the order of ARGV[2..]
-- ARGV[1]: now (epoch s)
-- ARGV[2..]: the job ids
-- Returns how many jobs it added to `finished`.
--#include sum_final
local added = 0
for i = 2, #ARGV do
  local id, job = ARGV[i], KEYS[i + 1]
  local h = redis.call('HMGET', job, 'state', 'finished_at')
  if ENDED[h[1]] and h[2] then
    added = added + redis.call('ZADD', KEYS[1], 'NX', h[2], id)
  end
  local unsettled = h[1] == 'cancelled'
    and final_count(job) < tonumber(redis.call('HGET', job, 'total') or '0')
  if SENDING[h[1]] or unsettled then
    redis.call('ZADD', KEYS[2], 'NX', ARGV[1], id)
  end
end
return added
