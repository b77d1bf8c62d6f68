"""Global rate limits per provider account, shared by every worker process
on every host through Redis.

Hand-written because no maintained library does this with asyncio and
redis-py 8 (``limits[redis]`` pins redis<8; docs/ARCHITECTURE.md,
"Measured facts"). One Lua script runs GCRA for two limits at once — SMS parts per
second and requests per second, each with ``burst_s`` of capacity — using
the server's ``TIME``, so hosts with skewed clocks agree. Acquire once per
provider request with its part count as the cost: the limiter costs nothing
per recipient. A request costlier than the whole burst (a message with more
parts than the burst, or any burst-sized request once throttling has shrunk
the burst) waits for a full bucket and is charged in full, so it is never
refused forever and the long-run rate still holds. A refusal takes nothing.

Provider throttling (HTTP 429) halves the account's effective rate for every
worker and blocks it until ``Retry-After`` (429s within a second of a
halving, as every worker sees the same burst of them, halve once; the floor
is ``MIN_FACTOR``); the rate climbs back by 10 % of itself for each 10 s
without throttling, computed lazily in the script.

Waits are whole microseconds, never longer than `MAX_WAIT_S` (the limiter
hash's lifetime), however large the figures: a ``Retry-After`` of ``1e12``
or ``inf`` blocks the account at most that long (the adapters already cap
it at ``retry_max_s``), and no float that Lua would print as ``1e+15`` or
``inf`` reaches a caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as aioredis

from producer.core.keys import PREFIX

MAX_WAIT_S = 3600  # the limiter hash's lifetime: no wait or block outlasts it
MIN_FACTOR = 1 / 64
RECOVERY_STEP_S = 10.0
RECOVERY_GROWTH = 1.1

# KEYS[1]: the account's limiter hash: tat_m, tat_r (GCRA schedules, server
# seconds), factor (effective share of the configured rates, as of
# throttled_at), throttled_at (the last 429), halved_at, until (blocked until)
# ARGV: parts per second, requests per second, burst_s, cost in parts,
#       min factor, recovery step s, recovery growth, max wait s (the hash's TTL)
# Returns {allowed 0|1, wait in whole microseconds (digits), effective factor (string)}
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local mps, rps = tonumber(ARGV[1]), tonumber(ARGV[2])
local burst, cost = tonumber(ARGV[3]), tonumber(ARGV[4])
local min_factor, step, growth = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local max_wait = tonumber(ARGV[8])
-- %.0f, not tostring: tostring writes 10^15 as 1e+15.
local function micros(wait)
  return string.format('%.0f', math.ceil(math.min(wait, max_wait) * 1e6))
end
local h = redis.call('HMGET', KEYS[1], 'tat_m', 'tat_r', 'factor', 'throttled_at', 'until')
local tat_m, tat_r = tonumber(h[1]) or now, tonumber(h[2]) or now
local factor, throttled_at = tonumber(h[3]) or 1, tonumber(h[4]) or 0
local block_until = tonumber(h[5]) or 0
if factor < 1 then
  local steps = math.floor((now - throttled_at) / step)
  if steps > 0 then factor = math.min(1, factor * growth ^ steps) end
  if factor < min_factor then factor = min_factor end
end
if now < block_until then
  return {0, micros(block_until - now), tostring(factor)}
end
local cost_m, cost_r = cost / (mps * factor), 1 / (rps * factor)
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
if wait > 1e-6 then
  return {0, micros(wait), tostring(factor)}
end
-- Microseconds: tostring keeps 14 digits, 100 µs at today's epoch, and a
-- part at 50,000/s is 20 µs.
redis.call('HSET', KEYS[1], 'tat_m', string.format('%.6f', now + ahead_m),
           'tat_r', string.format('%.6f', now + ahead_r))
redis.call('EXPIRE', KEYS[1], max_wait)
return {1, '0', tostring(factor)}
"""

# KEYS[1]: the limiter hash. ARGV: retry-after s (0 to max wait, fixed-point),
# min factor, step s, growth, max wait s (the hash's TTL).
_THROTTLED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local h = redis.call('HMGET', KEYS[1], 'factor', 'throttled_at', 'until', 'halved_at')
local factor, throttled_at = tonumber(h[1]) or 1, tonumber(h[2]) or 0
local block_until, halved_at = tonumber(h[3]) or 0, tonumber(h[4]) or 0
local min_factor, step, growth = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if factor < 1 then
  local steps = math.floor((now - throttled_at) / step)
  if steps > 0 then factor = math.min(1, factor * growth ^ steps) end
end
-- Several workers see the same burst of 429s: halve once per second at most,
-- counted from the last halving (a steady stream of 429s keeps halving).
if now - halved_at >= 1 then
  factor = math.max(min_factor, factor / 2)
  halved_at = now
end
local max_wait = tonumber(ARGV[5])
local retry_after = math.min(tonumber(ARGV[1]) or 0, max_wait)
if now + retry_after > block_until then block_until = now + retry_after end
redis.call('HSET', KEYS[1], 'factor', tostring(factor), 'throttled_at', string.format('%.6f', now),
           'halved_at', string.format('%.6f', halved_at),
           'until', string.format('%.6f', block_until))
redis.call('EXPIRE', KEYS[1], max_wait)
return tostring(factor)
"""


def limiter_key(account_name: str) -> str:
    return f"{PREFIX}:rate:{account_name}"


@dataclass(frozen=True, slots=True)
class Limits:
    messages_per_second: float
    requests_per_second: float
    burst_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    wait_s: float
    factor: float  # the account's effective share of its configured rate


class RateLimiter:
    def __init__(self, client: aioredis.Redis) -> None:
        self._acquire = client.register_script(_ACQUIRE)
        self._throttled = client.register_script(_THROTTLED)

    async def try_acquire(self, account: str, limits: Limits, cost_parts: int) -> Decision:
        """Take capacity for one request of ``cost_parts`` parts, or say how
        long until it would fit. Never blocks; taking nothing costs nothing."""
        allowed, wait_us, factor = await self._acquire(
            keys=[limiter_key(account)],
            args=[
                limits.messages_per_second,
                limits.requests_per_second,
                limits.burst_s,
                cost_parts,
                MIN_FACTOR,
                RECOVERY_STEP_S,
                RECOVERY_GROWTH,
                MAX_WAIT_S,
            ],
        )
        return Decision(bool(int(allowed)), min(int(wait_us) / 1e6, MAX_WAIT_S), float(factor))

    async def throttled(self, account: str, retry_after_s: float | None) -> float:
        """The provider said 429: halve the account's rate for every worker and
        block it for ``retry_after_s`` (at most `MAX_WAIT_S`; nan is none)."""
        factor = await self._throttled(
            keys=[limiter_key(account)],
            args=[
                f"{block_s(retry_after_s):.6f}",
                MIN_FACTOR,
                RECOVERY_STEP_S,
                RECOVERY_GROWTH,
                MAX_WAIT_S,
            ],
        )
        return float(factor)


def block_s(retry_after_s: float | None) -> float:
    """A Retry-After as the limiter's block: 0 to `MAX_WAIT_S`, never nan or inf."""
    if retry_after_s is None or math.isnan(retry_after_s):
        return 0.0
    return min(max(retry_after_s, 0.0), MAX_WAIT_S)
