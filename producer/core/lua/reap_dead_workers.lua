-- reap_dead_workers: unlist the workers without a heartbeat for a while
-- (worker/background/watchdog.py, reap_dead_workers), in one call, so that
-- one watchdog finds each death.
--
-- KEYS[1]: the workers' sorted set
-- ARGV[1]: seconds without a beat that mean dead
-- Returns the dead workers with their last beats (server time), flat:
-- {id, score, id, score, ...}.
--#include server_now
local cutoff = server_now() - tonumber(ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'WITHSCORES')
for i = 1, #dead, 2 do redis.call('ZREM', KEYS[1], dead[i]) end
return dead
