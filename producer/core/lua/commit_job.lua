-- commit_job: create a submitted job and rename its staged blocks into place,
-- in one step, so that a job in Redis is whole or absent
-- (producer/submission.py, store_job). The job is scheduled if its schedule
-- time is later than its creation time (a time in the past means now), else
-- queued. The job hash gets the fields of producer/core/store.py's layout;
-- every block is renamed into place and made permanent; a scheduled job is
-- listed in the scheduled set (scored by its time), a queued one in the active
-- set (the workers' watchdog re-plans it if its plan task is lost). If the job
-- exists, the staged blocks are dropped; if any staged block has expired,
-- nothing is done.
--
-- KEYS[1]: the job hash
-- KEYS[2]: the jobs index (JOBS_INDEX)
-- KEYS[3]: the scheduled set
-- KEYS[4]: the active set
-- KEYS[5..4+n]: the n staged blocks
-- KEYS[5+n..4+2n]: their n final names
-- ARGV[1]: the job's settings (JSON)
-- ARGV[2]: the number of messages (total)
-- ARGV[3]: created_at (epoch s)
-- ARGV[4]: origin (the submission's id, '' for none)
-- ARGV[5]: the job id
-- ARGV[6]: the schedule time (epoch s, 0 for none)
-- ARGV[7]: n, the number of blocks
-- Returns the job's state ('scheduled' or 'queued'), 0 if the job exists, or
-- -1 if a staged block has expired.
local n = tonumber(ARGV[7])
if redis.call('EXISTS', KEYS[1]) == 1 then
  for i = 5, 4 + n do redis.call('DEL', KEYS[i]) end
  return 0
end
for i = 5, 4 + n do
  if redis.call('EXISTS', KEYS[i]) == 0 then return -1 end
end
local state = tonumber(ARGV[6]) > tonumber(ARGV[3]) and 'scheduled' or 'queued'
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'state', state, 'total', ARGV[2],
           'created_at', ARGV[3], 'origin', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
if state == 'scheduled' then redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5]) end
if state == 'queued' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[5]) end
for i = 1, n do
  redis.call('RENAME', KEYS[4 + i], KEYS[4 + n + i])
  redis.call('PERSIST', KEYS[4 + n + i])
end
return state
