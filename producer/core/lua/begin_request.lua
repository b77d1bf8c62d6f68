-- begin_request: mark a planned provider request `sending`, just before it is
-- sent (worker/store.py, ResultsStore.begin_request). A request starts only
-- while its job may send (SENDING: after a pause or a cancel returns, no new
-- provider request of the job starts), only while the pass that planned it
-- still holds the chunk's lease, and only while it is still pending: never
-- once another pass has dropped, settled or begun it. The very same sending
-- state (its request token) is this call run again: redis-py sends a script
-- again when its reply was lost (a Redis restart), and the first run began
-- the request; answering 'taken' then would leave it `sending`, unsent, and
-- make it `unknown`.
--
-- KEYS[1]: the job hash
-- KEYS[2]: the chunk's requests hash
-- KEYS[3]: the chunk's lease
-- ARGV[1]: the request id
-- ARGV[2]: the request's sending state (JSON)
-- ARGV[3]: the lease token of the pass
-- Returns 'begun', or why not: 'stopped' (the job does not send), 'lease'
-- (the pass lost the chunk) or 'taken' (the request is no longer pending).
local current = redis.call('HGET', KEYS[2], ARGV[1])
if current == ARGV[2] then return 'begun' end
if not SENDING[redis.call('HGET', KEYS[1], 'state')] then return 'stopped' end
if redis.call('GET', KEYS[3]) ~= ARGV[3] then return 'lease' end
if not current or cjson.decode(current)['s'] ~= 'pending' then return 'taken' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 'begun'
