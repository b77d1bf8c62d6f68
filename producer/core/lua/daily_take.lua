-- daily_take: reserve SMS parts within the account's daily_max_parts for
-- today (UTC, by the server's clock), across every job and worker
-- (worker/pipeline/daily_cap.py, DailyCaps.take). A request that would pass
-- the cap takes nothing. A new day starts from zero.
--
-- KEYS[1]: the account's daily hash: day (days since the epoch, UTC), parts
-- ARGV[1]: daily_max_parts
-- ARGV[2]: the parts to take
-- ARGV[3]: the hash's lifetime (s)
-- Returns {taken 0|1, whole microseconds until the next UTC day (digits)}.
--#include server_now
local now = server_now()
local day = math.floor(now / 86400)
local wait = string.format('%.0f', math.ceil(((day + 1) * 86400 - now) * 1e6))
local cap, parts = tonumber(ARGV[1]), tonumber(ARGV[2])
local h = redis.call('HMGET', KEYS[1], 'day', 'parts')
local used = 0
if tonumber(h[1]) == day then
  used = tonumber(h[2]) or 0
end
if used + parts > cap then
  return {0, wait}
end
redis.call('HSET', KEYS[1], 'day', day, 'parts', used + parts)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, wait}
