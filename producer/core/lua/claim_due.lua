-- claim_due: claim scheduled jobs that are due (worker/background/releaser.py).
-- A claim pushes a job's score `claim seconds` ahead instead of removing it,
-- so a worker that dies between claim and enqueue leaves the job to be
-- released again; the plan task removes it once it runs. Due means by the
-- server's clock.
--
-- KEYS[1]: the scheduled set
-- ARGV[1]: claim seconds
-- ARGV[2]: the most jobs to claim
-- Returns the claimed job ids.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id) end
return due
