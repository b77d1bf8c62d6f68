-- cancel_job: cancel a job that has not ended (producer/control.py, cancel).
-- A cancelled job is listed as finished, and stays watched (active, as of now)
-- until its sweep has settled every recipient: the watchdog publishes the
-- sweep again if it goes silent (worker/background/watchdog.py). A retry's
-- reset cut short by the cancel stops there; its run ends, so the sweep looks
-- at every chunk again (the done bits were the previous run's).
--
-- KEYS[1]: the job hash
-- KEYS[2]: the scheduled set
-- KEYS[3]: the finished set (ended jobs, scored by finished_at)
-- KEYS[4]: the active set (scored by the job's last activity)
-- KEYS[5]: the job's done bitmap
-- ARGV[1]: now (epoch s)
-- ARGV[2]: the job id
-- Returns 'cancelled!' if this call cancelled the job, else the job's state
-- (an ended one); nil if there is no such job.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if ENDED[state] then return state end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'retry') == 1 then
  redis.call('HDEL', KEYS[1], 'retry', 'retry_next')
  redis.call('DEL', KEYS[5])
  redis.call('HINCRBY', KEYS[1], 'run', 1)
end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[1], ARGV[2])
return 'cancelled!'
