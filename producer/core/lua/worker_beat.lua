-- worker_beat: a worker main process's heartbeat
-- (worker/background/watchdog.py, beat): its id in the workers' set, scored
-- by the server's clock.
--
-- KEYS[1]: the workers' sorted set
-- ARGV[1]: the worker's id
-- Returns nothing.
--#include server_now
redis.call('ZADD', KEYS[1], server_now(), ARGV[1])
