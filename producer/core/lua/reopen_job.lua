-- reopen_job: reopen an ended job for a retry (producer/control.py,
-- reopen_for_retry). A cancelled job has ended only once its sweep has settled
-- every recipient ('cancelling' until then); with nothing to retry the job
-- stays as it is. A job the workers have begun to remove (retention) is gone
-- already. Reopened, the job is active and queued, and records the reset it
-- owes (`retry`: the codes; `retry_next`: the first block not reset yet), so
-- whoever comes next finishes it: the caller (Producer.retry), or else the
-- plan task, which the caller or the watchdog enqueues. Until the reset is
-- done no script completes the job (its counters still count the recipients
-- to reset); then its done bitmap goes and its run moves on (restart_run).
--
-- KEYS[1]: the job hash
-- KEYS[2]: the scheduled set (unused; every transition is given the same keys)
-- KEYS[3]: the finished set
-- KEYS[4]: the active set
-- ARGV[1]: the status codes to retry (JSON list)
-- ARGV[2]: the job id
-- ARGV[3]: now (epoch s)
-- Returns 'queued!' if this call reopened the job, 'cancelling' if its cancel
-- has not settled every recipient yet, else the job's state; nil if there is
-- no such job (or it is being removed).
local state = redis.call('HGET', KEYS[1], 'state')
if not state or redis.call('HEXISTS', KEYS[1], 'removing') == 1 then return false end
if not ENDED[state] then return state end
--#include sum_final
local function count(codes)
  local n = 0
  for _, code in ipairs(codes) do
    n = n + tonumber(redis.call('HGET', KEYS[1], 'n:' .. code) or '0')
  end
  return n
end
if final_count(KEYS[1]) < tonumber(redis.call('HGET', KEYS[1], 'total')) then
  return 'cancelling'
end
if count(cjson.decode(ARGV[1])) == 0 then return state end
redis.call('HSET', KEYS[1], 'state', 'queued', 'retry', ARGV[1], 'retry_next', 0)
redis.call('HDEL', KEYS[1], 'finished_at', 'callback')
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
return 'queued!'
