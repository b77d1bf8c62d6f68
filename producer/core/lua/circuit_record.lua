-- circuit_record: the outcome of one request through the account, for its
-- circuit breaker (worker/pipeline/circuit.py, Circuits.record).
-- A failure ("not sent": could not connect, 429, 5xx) counts; the
-- threshold-th in a row opens the circuit for a cool-down, and a failed probe
-- re-opens it for another. A success while closed resets the count; the
-- probe's success closes the circuit. Other requests that end while the
-- circuit is open (sent before it opened) change nothing but the count.
--
-- KEYS[1]: the account's circuit hash (layout in circuit_gate.lua)
-- ARGV[1]: 1 if the request failed as "not sent", else 0
-- ARGV[2]: 1 if it was the probe, else 0
-- ARGV[3]: failover_after_failures (the threshold)
-- ARGV[4]: failover_cooldown_s
-- ARGV[5]: the hash's lifetime after its last change (s)
-- Returns {change: 1 opened (or re-opened), -1 closed, 0 none; failures}.
--#include server_now
local failed, probe = ARGV[1] == '1', ARGV[2] == '1'
local threshold, cooldown = tonumber(ARGV[3]), tonumber(ARGV[4])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if not failed then
  if probe or not open_until then
    redis.call('DEL', KEYS[1])
    return {(probe and open_until) and -1 or 0, 0}
  end
  return {0, tonumber(redis.call('HGET', KEYS[1], 'failures')) or 0}
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local change = 0
if probe or (not open_until and failures >= threshold) then
  local now = server_now()
  redis.call('HSET', KEYS[1], 'open_until', string.format('%.6f', now + cooldown))
  redis.call('HDEL', KEYS[1], 'probe_until')
  change = 1
end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[5])))
return {change, failures}
