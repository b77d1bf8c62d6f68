-- pause_job: pause a scheduled, queued or running job, remembering where it
-- was (paused_from) for resume_job (producer/control.py, pause). No provider
-- request starts while a job is paused: SENDING does not have it.
--
-- KEYS[1]: the job hash
-- Returns 'paused!' if this call paused the job, else the job's state; nil if
-- there is no such job.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state == 'scheduled' or SENDING[state] then
  redis.call('HSET', KEYS[1], 'state', 'paused', 'paused_from', state)
  return 'paused!'
end
return state
