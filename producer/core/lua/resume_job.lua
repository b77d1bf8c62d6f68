-- resume_job: resume a paused job (producer/control.py, resume). A job paused
-- before its schedule waits for it again: the workers push a paused job's
-- release a minute on each time they look at it, so it is listed as due at its
-- time again. Any other resumes as queued, through a new plan, which enqueues
-- every chunk (finished ones return at once) or completes the job if nothing
-- is left (its last commit landed while it was paused; worker/tasks.py
-- plan_job); a queued job is active again (its plan task is watched for).
-- A job its max_cost paused is paused no more for it (pause_reason goes).
--
-- KEYS[1]: the job hash
-- KEYS[2]: the scheduled set
-- KEYS[3]: the finished set (unused; every transition is given the same keys)
-- KEYS[4]: the active set
-- ARGV[1]: the job's schedule time (epoch s)
-- ARGV[2]: the job id
-- ARGV[3]: now (epoch s)
-- Returns the new state with '!' appended ('scheduled!' or 'queued!') if this
-- call resumed the job, else the job's state; nil if there is no such job.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state ~= 'paused' then return state end
local from = redis.call('HGET', KEYS[1], 'paused_from')
local new = from == 'scheduled' and 'scheduled' or 'queued'
redis.call('HSET', KEYS[1], 'state', new)
redis.call('HDEL', KEYS[1], 'pause_reason')
if new == 'scheduled' then redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2]) end
if new == 'queued' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2]) end
return new .. '!'
