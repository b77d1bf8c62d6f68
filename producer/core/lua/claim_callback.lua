-- claim_callback: who sends an ended job's completion callback
-- (worker/store.py, ResultsStore.claim_callback). A cancelled job is reported
-- once its sweep has settled every recipient, not when a request in flight
-- ends first.
--
-- KEYS[1]: the job hash
-- Returns 1 to the one caller that claims it (the job has ended, every
-- recipient is final, and no one claimed it before), else 0.
--#include sum_final
if not ENDED[redis.call('HGET', KEYS[1], 'state')] then return 0 end
if final_count(KEYS[1]) < tonumber(redis.call('HGET', KEYS[1], 'total')) then return 0 end
return redis.call('HSETNX', KEYS[1], 'callback', '1')
