-- old_watchdog_snapshot: the watchdog's snapshot before bench/watchdog_snapshot.py
-- measured it, kept to time against (python -m bench.watchdog_snapshot --old):
-- every queued and unacknowledged message body in one reply.
--
-- KEYS[1..n-1]: the queue lists (every priority step of every queue)
-- KEYS[n]: the unacked hash
-- Returns every message body: the lists' entries, then the unacked values
-- ([message, exchange, routing key]).
local out = {}
for i = 1, #KEYS - 1 do
  for _, raw in ipairs(redis.call('LRANGE', KEYS[i], 0, -1)) do out[#out + 1] = raw end
end
for _, raw in ipairs(redis.call('HVALS', KEYS[#KEYS])) do out[#out + 1] = raw end
return out
