-- restart_run: start a retried job's new run, once its reset has set back the
-- outcomes of every block (producer/control.py, restart_run). Every chunk then
-- runs again: the done bitmap goes, and the job's `run` moves on, so that a
-- pass that read the outcomes before the reset (and found nothing to send)
-- sets no bit, however late it ends (worker/store.py); the reset is no longer
-- owed. Once only.
--
-- KEYS[1]: the job hash
-- KEYS[2]: the job's done bitmap
-- ARGV[1]: the job's block count
-- Returns the job's run, new or not.
local run = tonumber(redis.call('HGET', KEYS[1], 'run') or '0')
if redis.call('HEXISTS', KEYS[1], 'retry') == 0 then return run end
if tonumber(redis.call('HGET', KEYS[1], 'retry_next') or '0') < tonumber(ARGV[1]) then
  return run
end
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[1], 'retry', 'retry_next')
return redis.call('HINCRBY', KEYS[1], 'run', 1)
