-- mark_running: a queued or scheduled job is running once its plan has queued
-- its first chunks, not once the last of them runs (worker/tasks.py, plan_job).
-- A paused or ended job stays as it is.
--
-- KEYS[1]: the job hash
-- Returns nothing.
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'queued' or state == 'scheduled' then
  redis.call('HSET', KEYS[1], 'state', 'running')
end
