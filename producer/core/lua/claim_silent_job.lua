-- claim_silent_job: take a silent job for one watchdog to look at
-- (worker/background/watchdog.py, claim): re-scores the job to now if it is
-- still silent since the cutoff, a compare-and-set on its score, so a job is
-- looked at once per stall_s.
--
-- KEYS[1]: the active set
-- ARGV[1]: the job id
-- ARGV[2]: the cutoff (epoch s): silent since then
-- ARGV[3]: now (epoch s)
-- Returns 1, ours to look at; 0, taken by another worker (or active again).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
