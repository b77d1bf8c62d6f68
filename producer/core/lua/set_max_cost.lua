-- set_max_cost: give a job with max_cost a new cap, before it is resumed
-- (producer/control.py, set_max_cost). A cap below what its requests have
-- reserved already is refused, in the same step that reads it: a worker's
-- reservation (cost_reserve.lua) never comes between. An ended job keeps its
-- cap. Money is whole millionths (producer/core/money.py).
--
-- KEYS[1]: the job hash
-- ARGV[1]: the new cap, in millionths
-- Returns {answer, millionths reserved}: answer 'set', 'low' (below what is
-- reserved: unchanged) or the job's state if it has ended (unchanged); nil
-- if there is no such job.
local job = redis.call('HMGET', KEYS[1], 'state', 'cost_spent')
if not job[1] then return false end
local spent = job[2] or '0'
if ENDED[job[1]] then return {job[1], spent} end
if tonumber(spent) > tonumber(ARGV[1]) then return {'low', spent} end
redis.call('HSET', KEYS[1], 'cost_cap', ARGV[1])
return {'set', spent}
