-- retention_remove: one batch of a marked job's keys
-- (worker/background/retention.py, remove_job); the last batch also deletes
-- the job hash and the job's index entries, so a removal that dies half-way
-- is finished by the next sweep.
--
-- KEYS[1]: the job hash
-- KEYS[2]: the finished set
-- KEYS[3]: the jobs index
-- KEYS[4]: the scheduled set
-- KEYS[5]: the active set
-- KEYS[6..]: the job's keys to remove in this batch
-- ARGV[1]: the job id
-- ARGV[2]: '1' for the last batch (the job hash and its index entries go too)
-- Returns how many keys existed, or -1 if the job is not marked for removal
-- (another worker has finished removing it).
if redis.call('HEXISTS', KEYS[1], 'removing') == 0 then return -1 end
local n = 0
if #KEYS > 5 then n = redis.call('UNLINK', unpack(KEYS, 6)) end
if ARGV[2] == '1' then
  n = n + redis.call('UNLINK', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
end
return n
