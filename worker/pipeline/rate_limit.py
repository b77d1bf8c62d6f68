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
without throttling, computed lazily by each script (rate_factor.lua).

High priority is served first within the account's capacity, not only in
the queue: ``HIGH_RESERVE_SHARE`` of the burst is kept for it. A normal
request sees a burst that much smaller and books at most half of that
reserve ahead, so a saturated account's schedule always leaves a one-time
code room to go at once; a high request may use the whole burst. The
long-run rate and the burst are the configured ones for both: the reserve
only orders who gets the capacity, it adds none. It holds while a normal
request costs less than the burst left to it (``batch_size`` under 90 % of
``messages_per_second × burst_s``); a request of a whole burst leaves no
room however it is booked, so it is booked as far ahead as asked.

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

from producer.core import keys
from producer.core.scripts import async_script

MAX_WAIT_S = 3600  # the limiter hash's lifetime: no wait or block outlasts it
MIN_FACTOR = 1 / 64
RECOVERY_STEP_S = 10.0
RECOVERY_GROWTH = 1.1
HIGH_RESERVE_SHARE = 0.1  # of burst_s: capacity only high-priority requests may take


def limiter_key(account_name: str) -> str:
    return keys.rate(account_name)


@dataclass(frozen=True, slots=True)
class Limits:
    messages_per_second: float
    requests_per_second: float
    burst_s: float


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    wait_s: float  # allowed: to wait before sending (booked); else until it could be booked
    factor: float  # the account's effective share of its configured rate
    stopped: str | None = None  # the account's stop, when asked to look (nothing taken)


class RateLimiter:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._acquire = async_script("rate_acquire")
        self._throttled = async_script("rate_throttled")

    async def try_acquire(
        self,
        account: str,
        limits: Limits,
        cost_parts: int,
        book_ahead_s: float = 0.0,
        unless_stopped: bool = False,
        leave_reserve: bool = False,
    ) -> Decision:
        """Take capacity for one request of ``cost_parts`` parts, or say how
        long until it would fit. Never blocks; taking nothing costs nothing.
        A request that fits within ``book_ahead_s`` is booked: allowed, and
        sent once ``wait_s`` has passed; a refusal's ``wait_s`` is then until
        it could be booked. ``unless_stopped``: take nothing while the
        account is stopped (keys.account_block), and say why, in the same
        round trip. ``leave_reserve``: a request not of high priority, which
        leaves high priority's reserve (``HIGH_RESERVE_SHARE``) untouched."""
        stop_key = [keys.account_block(account)] if unless_stopped else []
        reserve_s = limits.burst_s * HIGH_RESERVE_SHARE if leave_reserve else 0.0
        allowed, wait_us, factor, stopped = await self._acquire(
            keys=[limiter_key(account), *stop_key],
            args=[
                limits.messages_per_second,
                limits.requests_per_second,
                limits.burst_s,
                cost_parts,
                MIN_FACTOR,
                RECOVERY_STEP_S,
                RECOVERY_GROWTH,
                MAX_WAIT_S,
                book_ahead_s,
                reserve_s,
            ],
            client=self.redis,
        )
        return Decision(
            bool(int(allowed)),
            min(int(wait_us) / 1e6, MAX_WAIT_S),
            float(factor),
            stopped.decode() if stopped else None,
        )

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
            client=self.redis,
        )
        return float(factor)


def block_s(retry_after_s: float | None) -> float:
    """A Retry-After as the limiter's block: 0 to `MAX_WAIT_S`, never nan or inf."""
    if retry_after_s is None or math.isnan(retry_after_s):
        return 0.0
    return min(max(retry_after_s, 0.0), MAX_WAIT_S)
