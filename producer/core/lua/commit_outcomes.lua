-- commit_outcomes: a chunk's outcomes, the job's per-status counters, the
-- request's transition to done and the job's end, in one atomic call
-- (worker/store.py, ResultsStore.commit). Fenced by the request's token, so a
-- worker that lost its chunk cannot overwrite the one that took it over. A
-- commit to a queued, running or cancelled job is its activity (its score in
-- `active`, read by worker/background/watchdog.py) until its last recipient
-- is final (finish_if_final).
-- One string rather than an argument per outcome, and one HMGET/HSET per 1000
-- outcomes rather than a call each: a chunk's commit was the largest Redis
-- cost per recipient. An outcome's status code is its 3rd character.
--
-- KEYS[1]: the job hash
-- KEYS[2]: the block's outcomes hash
-- KEYS[3]: the chunk's requests hash
-- KEYS[4]: the finished set
-- KEYS[5]: the active set
-- KEYS[6]: (optional) the job's timeline hash: recipients newly accepted are
--          counted in the bucket of ARGV[4] (the console's chart, GET
--          /v1/jobs/{id}/timeline); with it, ARGV[8] is the most buckets kept
-- ARGV[1]: the request id ('' for none: outcomes only)
-- ARGV[2]: the request's fencing token
-- ARGV[3]: the request's done state (JSON)
-- ARGV[4]: now (epoch s)
-- ARGV[5]: the job id
-- ARGV[6]: the outcomes, one string of "index\toutcome JSON\n" records
-- ARGV[7]: (optional) route jobs: each outcome's account, one "name\n" a record in the
--          order of ARGV[6] ('' for a one-account job): the job's per-account
--          counters a:{account}:{code} follow the per-status ones
-- ARGV[8]: (with KEYS[6]) the most buckets the timeline keeps: past it, the
--          bucket width (field 'w', 1 s at first) doubles and buckets merge
--          in pairs, so a long job's timeline stays that size, only coarser
-- Returns the job's state after the commit; 'fenced' if the request is no
-- longer ours, or 'gone' if the job was removed (retention): nothing written
-- then, so a late commit never leaves a stray counter-only job hash behind.
--#include finish_if_final
--#include timeline_add
local job, outcomes, requests = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', job) == 0 then return 'gone' end
if ARGV[1] ~= '' then
  local current = redis.call('HGET', requests, ARGV[1])
  if not current or not string.find(current, ARGV[2], 1, true) then return 'fenced' end
  redis.call('HSET', requests, ARGV[1], ARGV[3])
end
local final = {}
for _, code in ipairs(FINAL_CODES) do final[code] = true end
local indices, values = {}, {}
for index, value in string.gmatch(ARGV[6], '([^\t\n]+)\t([^\n]+)') do
  indices[#indices + 1] = index
  values[#values + 1] = value
end
local accounts = nil
if ARGV[7] and ARGV[7] ~= '' then
  accounts = {}
  for name in string.gmatch(ARGV[7], '([^\n]*)\n') do accounts[#accounts + 1] = name end
end
local delta, by_account, accepted = {}, {}, 0
local function count(name, code, n)
  local field = 'a:' .. name .. ':' .. code
  by_account[field] = (by_account[field] or 0) + n
end
for first = 1, #indices, 1000 do
  local last = math.min(first + 999, #indices)
  local old = redis.call('HMGET', outcomes, unpack(indices, first, last))
  local fields = {}
  for k = first, last do
    local old_code = old[k - first + 1] and string.sub(old[k - first + 1], 3, 3) or 'p'
    local new_code = string.sub(values[k], 3, 3)
    if old_code ~= new_code then
      if final[old_code] then delta[old_code] = (delta[old_code] or 0) - 1 end
      if final[new_code] then delta[new_code] = (delta[new_code] or 0) + 1 end
      if new_code == 'a' then accepted = accepted + 1 end
      if accounts then
        -- An outcome's account is its 11th field (producer/core/store.py);
        -- a final outcome overwritten is rare, so only then is one decoded.
        if final[old_code] then
          local before = cjson.decode(old[k - first + 1])[11]
          if type(before) == 'string' and before ~= '' then count(before, old_code, -1) end
        end
        if final[new_code] and accounts[k] ~= '' then count(accounts[k], new_code, 1) end
      end
    end
    fields[#fields + 1] = indices[k]
    fields[#fields + 1] = values[k]
  end
  redis.call('HSET', outcomes, unpack(fields))
end
for code, n in pairs(delta) do
  if n ~= 0 then redis.call('HINCRBY', job, 'n:' .. code, n) end
end
for field, n in pairs(by_account) do
  if n ~= 0 then redis.call('HINCRBY', job, field, n) end
end
if KEYS[6] and accepted > 0 then
  timeline_add(KEYS[6], accepted, tonumber(ARGV[4]), tonumber(ARGV[8]))
end
if finish_if_final(job, KEYS[4], KEYS[5], ARGV[4], ARGV[5]) then
  return redis.call('HGET', job, 'state')
end
local state = redis.call('HGET', job, 'state')
if FINISHING[state] then
  redis.call('ZADD', KEYS[5], ARGV[4], ARGV[5])
end
return state
