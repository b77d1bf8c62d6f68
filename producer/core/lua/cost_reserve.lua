-- cost_reserve: reserve a provider request's cost against its job's max_cost,
-- just before the request begins, for every worker at once
-- (worker/pipeline/spend_cap.py, SpendCap.reserve). A request that would
-- pass the cap reserves nothing and pauses the job in the same step
-- (pause_reason max_cost; paused_from as pause_job.lua keeps it), so two
-- workers never both pass the cap, and the job is paused exactly when the
-- cap refuses. Money is whole millionths (producer/core/money.py).
--
-- KEYS[1]: the job hash
-- ARGV[1]: the job's max_cost as submitted, in millionths (cost_cap, which
--          a resume sets, comes first)
-- ARGV[2]: the request's cost, in millionths
-- Returns 'reserved'; 'capped' (nothing reserved: this call paused the job);
-- or 'stopped' (the job does not send now: nothing reserved).
local job = redis.call('HMGET', KEYS[1], 'state', 'cost_cap', 'cost_spent')
local state = job[1]
if not SENDING[state] then return 'stopped' end
local cap = tonumber(job[2] or ARGV[1])
local spent = tonumber(job[3] or '0')
if spent + tonumber(ARGV[2]) > cap then
  redis.call('HSET', KEYS[1], 'state', 'paused', 'paused_from', state, 'pause_reason', 'max_cost')
  return 'capped'
end
redis.call('HINCRBY', KEYS[1], 'cost_spent', ARGV[2])
return 'reserved'
