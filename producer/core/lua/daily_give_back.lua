-- daily_give_back: return parts that a request provably did not send to
-- today's count of the account (worker/pipeline/daily_cap.py,
-- DailyCaps.give_back). Parts taken on an earlier UTC day are not returned:
-- that day's count is gone. Never below zero.
--
-- KEYS[1]: the account's daily hash (layout in daily_take.lua)
-- ARGV[1]: the parts to give back
-- Returns the parts taken today after the return.
--#include server_now
local day = math.floor(server_now() / 86400)
local h = redis.call('HMGET', KEYS[1], 'day', 'parts')
if tonumber(h[1]) ~= day then
  return 0
end
local used = math.max((tonumber(h[2]) or 0) - tonumber(ARGV[1]), 0)
redis.call('HSET', KEYS[1], 'parts', used)
return used
