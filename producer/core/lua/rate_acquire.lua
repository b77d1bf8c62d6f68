-- rate_acquire: GCRA for an account's two limits at once, SMS parts per
-- second and requests per second, each with burst_s of capacity, on the
-- server's clock (worker/pipeline/rate_limit.py, RateLimiter.try_acquire).
-- A request costlier than the whole burst waits for a full bucket and is
-- charged in full. A refusal takes nothing. A request that would fit within
-- ARGV[9] seconds is booked: its capacity is taken now, and the caller waits
-- the returned time before sending (so a saturated account's schedule has no
-- gap between one request's slot and the next caller's round trip).
-- ARGV[10] seconds of the burst are kept for high priority: a request that
-- passes it (a normal one) sees a burst that much smaller and is booked at
-- most half of it ahead, so a saturated account's schedule leaves room for a
-- one-time code to go at once. A request costlier than that smaller burst
-- leaves no room however it is booked, and books as far ahead as asked.
--
-- KEYS[1]: the account's limiter hash: tat_m, tat_r (GCRA schedules, server
--          seconds), factor (effective share of the configured rates, as of
--          throttled_at), throttled_at (the last 429), halved_at, until
--          (blocked until), and the meter of parts taken in the last seconds
--          (meter_add: fields p0..p7)
-- KEYS[2]: (optional) the account's stop (keys.account_block): while it is
--          set nothing is taken, and its reason is returned
-- ARGV[1]: parts per second
-- ARGV[2]: requests per second
-- ARGV[3]: burst_s
-- ARGV[4]: the request's cost in parts
-- ARGV[5]: the min factor
-- ARGV[6]: the recovery step (s)
-- ARGV[7]: the recovery growth per step
-- ARGV[8]: the max wait (s; the hash's TTL)
-- ARGV[9]: how far ahead a request may be booked (s; 0 or absent: never)
-- ARGV[10]: the part of burst_s this request may not use (s; 0 or absent: none)
-- Returns {allowed 0|1, wait in whole microseconds (digits): before sending
-- if allowed, else until it could be booked, effective factor (string),
-- the account's stop reason or ''}.
--#include server_now
--#include rate_factor
--#include meter_add
local now = server_now()
local mps, rps = tonumber(ARGV[1]), tonumber(ARGV[2])
local burst, cost = tonumber(ARGV[3]), tonumber(ARGV[4])
local min_factor, step, growth = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local max_wait, book_ahead = tonumber(ARGV[8]), tonumber(ARGV[9]) or 0
local reserve = math.min(tonumber(ARGV[10]) or 0, burst)
burst = burst - reserve
-- %.0f, not tostring: tostring writes 10^15 as 1e+15.
local function micros(wait)
  return string.format('%.0f', math.ceil(math.min(wait, max_wait) * 1e6))
end
local h = redis.call('HMGET', KEYS[1], 'tat_m', 'tat_r', 'factor', 'throttled_at', 'until')
local tat_m, tat_r = tonumber(h[1]) or now, tonumber(h[2]) or now
local factor = recovered_factor(tonumber(h[3]) or 1, tonumber(h[4]) or 0, now, step, growth)
if factor < min_factor then factor = min_factor end
if KEYS[2] then
  local stopped = redis.call('GET', KEYS[2])
  if stopped then
    return {0, '0', tostring(factor), stopped}
  end
end
local block_until = tonumber(h[5]) or 0
if now < block_until then
  return {0, micros(block_until - now), tostring(factor), ''}
end
local cost_m, cost_r = cost / (mps * factor), 1 / (rps * factor)
if reserve > 0 and cost_m <= burst and cost_r <= burst then
  book_ahead = math.min(book_ahead, reserve / 2)
end
-- How far each schedule would run ahead of now. Offsets, not absolute times:
-- a double holds today's epoch to 0.2 µs, so now + 0.025 - now is not 0.025,
-- and a request costing exactly a burst of 0.025 s would be refused forever.
local ahead_m = math.max(tat_m - now, 0) + cost_m
local ahead_r = math.max(tat_r - now, 0) + cost_r
-- A request costlier than the whole burst (one long message; or a request
-- sized to the configured burst after throttling shrank it) goes once the
-- bucket is full, and pays in full: never refused forever.
local wait = math.max(ahead_m - math.max(burst, cost_m), ahead_r - math.max(burst, cost_r))
-- Under a microsecond is below the precision of the stored schedules.
if wait > 1e-6 and wait > book_ahead then
  return {0, micros(wait - book_ahead), tostring(factor), ''}
end
-- Microseconds: tostring keeps 14 digits, 100 µs at today's epoch, and a
-- part at 50,000/s is 20 µs.
redis.call('HSET', KEYS[1], 'tat_m', string.format('%.6f', now + ahead_m),
           'tat_r', string.format('%.6f', now + ahead_r))
-- The parts taken, per second, for GET /v1/accounts (parts/s now).
meter_add(KEYS[1], 'p', 8, now, cost)
redis.call('EXPIRE', KEYS[1], max_wait)
return {1, wait > 1e-6 and micros(wait) or '0', tostring(factor), ''}
