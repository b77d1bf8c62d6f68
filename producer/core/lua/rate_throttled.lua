-- rate_throttled: the provider said 429 (worker/pipeline/rate_limit.py,
-- RateLimiter.throttled): halve the account's effective rate for every
-- worker, at most once a second (several workers see the same burst of
-- 429s; counted from the last halving, so a steady stream keeps halving),
-- never below the min factor, and block the account until Retry-After.
--
-- KEYS[1]: the account's limiter hash (see rate_acquire.lua); its meter of
--          429s per second over the last minute (meter_add: fields q0..q63)
-- ARGV[1]: the Retry-After in seconds (0 to the max wait, fixed-point)
-- ARGV[2]: the min factor
-- ARGV[3]: the recovery step (s)
-- ARGV[4]: the recovery growth per step
-- ARGV[5]: the max wait (s; the hash's TTL)
-- Returns the account's effective factor after the 429 (string).
--#include server_now
--#include rate_factor
--#include meter_add
local now = server_now()
local h = redis.call('HMGET', KEYS[1], 'factor', 'throttled_at', 'until', 'halved_at')
local min_factor, step, growth = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local factor = recovered_factor(tonumber(h[1]) or 1, tonumber(h[2]) or 0, now, step, growth)
local block_until, halved_at = tonumber(h[3]) or 0, tonumber(h[4]) or 0
if now - halved_at >= 1 then
  factor = math.max(min_factor, factor / 2)
  halved_at = now
end
local max_wait = tonumber(ARGV[5])
local retry_after = math.min(tonumber(ARGV[1]) or 0, max_wait)
if now + retry_after > block_until then block_until = now + retry_after end
redis.call('HSET', KEYS[1], 'factor', tostring(factor), 'throttled_at', string.format('%.6f', now),
           'halved_at', string.format('%.6f', halved_at),
           'until', string.format('%.6f', block_until))
-- Every 429 is counted, halving or not, for GET /v1/accounts (429s in the last minute).
meter_add(KEYS[1], 'q', 64, now, 1)
redis.call('EXPIRE', KEYS[1], max_wait)
return tostring(factor)
