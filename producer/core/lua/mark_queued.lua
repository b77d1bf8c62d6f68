-- mark_queued: move a due job from scheduled to queued
-- (worker/background/releaser.py); any other state stays as it is.
--
-- KEYS[1]: the job hash
-- Returns the job's state now ('queued' if it was scheduled); nil if there is
-- no such job.
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'scheduled' then redis.call('HSET', KEYS[1], 'state', 'queued'); return 'queued' end
return state
