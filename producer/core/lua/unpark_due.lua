-- unpark_due: take the parked chunks that are due (worker/background/releaser.py).
-- Each is removed as it is taken: a releaser that dies before it enqueues the
-- chunk's task leaves the chunk neither parked nor queued, and the watchdog
-- (worker/background/watchdog.py) gives it a task once its job is silent.
-- Due means by the server's clock.
--
-- KEYS[1]: the parked set
-- ARGV[1]: the most chunks to take
-- Returns the members taken ("job_id:chunk").
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
