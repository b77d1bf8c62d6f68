-- circuit_gate: may a request go through the account now? Its circuit
-- breaker, shared by every worker (worker/pipeline/circuit.py, Circuits.gate).
-- Closed: yes. Open and cooling down: no, with the wait. Open with the
-- cool-down over: the first caller claims the one probe (until the claim
-- expires, so that a probe whose worker died does not hold it for ever);
-- everyone else still waits.
--
-- KEYS[1]: the account's circuit hash: failures (consecutive failed
--          requests), open_until (server seconds; set while open),
--          probe_until (server seconds; the claim of the probe in flight)
-- ARGV[1]: the cool-down (s): the wait given while a probe is in flight
-- ARGV[2]: how long a probe's claim lasts (s)
-- Returns {send 0|1, probe 0|1, failures, wait in whole microseconds (digits)}.
--#include server_now
local h = redis.call('HMGET', KEYS[1], 'failures', 'open_until', 'probe_until')
local failures = tonumber(h[1]) or 0
local open_until = tonumber(h[2])
if not open_until then
  return {1, 0, failures, '0'}
end
local now = server_now()
local cooldown, claim = tonumber(ARGV[1]), tonumber(ARGV[2])
local function micros(wait)
  return string.format('%.0f', math.ceil(math.max(wait, 0) * 1e6))
end
if now < open_until then
  return {0, 0, failures, micros(open_until - now)}
end
local probe_until = tonumber(h[3]) or 0
if now < probe_until then
  -- A probe is out: look again after a cool-down (a failed probe re-opens
  -- the circuit for one), or when its claim runs out, whichever is sooner.
  return {0, 0, failures, micros(math.min(cooldown, probe_until - now))}
end
redis.call('HSET', KEYS[1], 'probe_until', string.format('%.6f', now + claim))
return {1, 1, failures, '0'}
