-- cost_release: give back what a request reserved against its job's
-- max_cost (cost_reserve.lua) when it provably sent nothing (never began,
-- or answered "not sent"), or the share of the recipients the provider
-- refused (worker/pipeline/spend_cap.py, SpendCap.give_back). Never below
-- zero; nothing for a job that is gone (no hash is made again).
--
-- KEYS[1]: the job hash
-- ARGV[1]: the millionths to give back
-- Returns the millionths reserved after the give-back.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if tonumber(ARGV[1]) <= 0 then  -- HINCRBY refuses '-0'
  return tonumber(redis.call('HGET', KEYS[1], 'cost_spent') or '0')
end
local left = redis.call('HINCRBY', KEYS[1], 'cost_spent', '-' .. ARGV[1])
if left < 0 then
  redis.call('HSET', KEYS[1], 'cost_spent', 0)
  return 0
end
return left
