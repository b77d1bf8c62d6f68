-- reset_outcomes: one block of a reopened job's reset (producer/control.py,
-- reset_outcomes). If the block is the next one the reset owes, sets its
-- outcomes with the retried codes back to pending (attempts start again),
-- fixes the job's counters (`n:{code}`, and a route job's per-account
-- `a:{account}:{code}`: the account is the outcome's 11th field) and moves
-- `retry_next` on, in one step.
--
-- KEYS[1]: the job hash
-- KEYS[2]: the block's outcomes hash
-- ARGV[1]: the block's number
-- ARGV[2]: now (epoch s)
-- Returns how many outcomes it reset; -1 if the block is not owed (reset
-- already, by this caller or another one, or no reset pending: none was
-- asked, or a cancel stopped it).
local codes = redis.call('HGET', KEYS[1], 'retry')
if not codes then return -1 end
local next_block = tonumber(redis.call('HGET', KEYS[1], 'retry_next') or '0')
if next_block ~= tonumber(ARGV[1]) then return -1 end
redis.call('HSET', KEYS[1], 'retry_next', next_block + 1)
local wanted = {}
for _, code in ipairs(cjson.decode(codes)) do wanted[code] = true end
local all = redis.call('HGETALL', KEYS[2])
local n = 0
for i = 1, #all, 2 do
  local code = string.sub(all[i + 1], 3, 3)
  if wanted[code] then
    local outcome = cjson.decode(all[i + 1])
    local e164 = outcome[2]
    local kept = (type(e164) == 'string') and cjson.encode(e164) or 'null'
    local pending = '["p",' .. kept .. ',null,null,null,null,null,null,0,' .. ARGV[2] .. ']'
    redis.call('HSET', KEYS[2], all[i], pending)
    redis.call('HINCRBY', KEYS[1], 'n:' .. code, -1)
    local account = outcome[11]
    if type(account) == 'string' then
      redis.call('HINCRBY', KEYS[1], 'a:' .. account .. ':' .. code, -1)
    end
    n = n + 1
  end
end
return n
