-- sum_final: an include (--#include sum_final) defining
--   final_count(job): how many of the job's recipients have a final status,
--   the sum of the job hash's per-status counters n:{code} over FINAL_CODES
--   (the state table's final status codes, producer/core/states.py).
-- Compare it with the job hash's `total`: equal, every recipient is final.
local function final_count(job)
  local fields = {}
  for i, code in ipairs(FINAL_CODES) do fields[i] = 'n:' .. code end
  local done = 0
  for _, n in ipairs(redis.call('HMGET', job, unpack(fields))) do
    done = done + (tonumber(n) or 0)
  end
  return done
end
