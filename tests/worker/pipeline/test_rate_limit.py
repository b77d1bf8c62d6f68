"""The global rate limiter against a real Valkey server.

Every `RateLimiter` here has its own Redis connection, as a worker process on
its own host would. Time comes from the server (`TIME`), so the script cannot
be run at simulated times: no Hypothesis here. Recovery is tested by writing
the limiter hash's `throttled_at` (layout in `worker/pipeline/rate_limit.py`) into the
past and reading the effective factor back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from producer.core import keys
from worker.pipeline.rate_limit import (
    HIGH_RESERVE_SHARE,
    MAX_WAIT_S,
    MIN_FACTOR,
    RECOVERY_GROWTH,
    Decision,
    Limits,
    RateLimiter,
    limiter_key,
)

ACCOUNT = "acct"
# 2 parts/s with 3 s of burst: 6 parts at once, then one part every 0.5 s.
SLOW = Limits(messages_per_second=2, requests_per_second=1000, burst_s=3)
PART_INTERVAL_S = 0.5
# Round trips to a local server take well under this.
SLACK_S = 0.1

Scenario = Callable[[list[RateLimiter], aioredis.Redis], Awaitable[None]]


def run(redis_url: str, scenario: Scenario, clients: int = 1) -> None:
    """Run `scenario` with `clients` limiters, each on its own connection."""

    async def main() -> None:
        connections = [aioredis.Redis.from_url(redis_url) for _ in range(clients)]
        try:
            await scenario([RateLimiter(c) for c in connections], connections[0])
        finally:
            for connection in connections:
                await connection.aclose()

    asyncio.run(main())


async def server_now_s(client: aioredis.Redis) -> float:
    seconds, micros = await client.time()
    return float(seconds) + micros / 1e6


async def admitted_in_a_row(
    limiter: RateLimiter, limits: Limits, cost_parts: int = 1, most: int = 1000
) -> tuple[int, Decision]:
    """Acquire until the first refusal: how many went through, and the refusal."""
    for admitted in range(most):
        decision = await limiter.try_acquire(ACCOUNT, limits, cost_parts)
        if not decision.allowed:
            return admitted, decision
    raise AssertionError(f"{most} acquires in a row were all admitted")


async def wait_until_admitted(
    limiter: RateLimiter, limits: Limits, cost_parts: int, timeout_s: float
) -> float:
    """Poll until an acquire goes through; the seconds it took."""
    started = time.monotonic()
    while True:
        decision = await limiter.try_acquire(ACCOUNT, limits, cost_parts)
        if decision.allowed:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not admitted within {timeout_s} s: {decision}")
        await asyncio.sleep(min(decision.wait_s, 0.02))


async def limiter_field(client: aioredis.Redis, name: str) -> float:
    raw = await client.hget(limiter_key(ACCOUNT), name)
    assert raw is not None, f"the limiter hash has no {name}"
    return float(raw)


async def set_throttle_state(
    client: aioredis.Redis, factor: float, ago_s: float, halved_ago_s: float | None = None
) -> None:
    """Pretend the account's last 429 came `ago_s` seconds ago (server clock),
    and its last halving `halved_ago_s` ago (default: at that 429)."""
    now = await server_now_s(client)
    halved_ago_s = ago_s if halved_ago_s is None else halved_ago_s
    await client.hset(
        limiter_key(ACCOUNT),
        mapping={
            "factor": repr(factor),
            "throttled_at": repr(now - ago_s),
            "halved_at": repr(now - halved_ago_s),
        },
    )


# --- capacity --------------------------------------------------------------------


def test_a_fresh_account_admits_exactly_its_burst_then_one_part_per_interval(
    redis_url: str,
) -> None:
    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        admitted, refusal = await admitted_in_a_row(limiter, SLOW)
        assert admitted == 6  # messages_per_second × burst_s
        assert PART_INTERVAL_S - SLACK_S < refusal.wait_s <= PART_INTERVAL_S
        assert refusal.factor == 1.0
        # The wait it gave is the truth: the next part goes after it, not before.
        took_s = await wait_until_admitted(limiter, SLOW, 1, timeout_s=2)
        assert refusal.wait_s - SLACK_S < took_s < refusal.wait_s + SLACK_S

    run(redis_url, scenario)


def test_a_whole_burst_goes_in_one_request(redis_url: str) -> None:
    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        assert (await limiter.try_acquire(ACCOUNT, SLOW, 6)).allowed
        refusal = await limiter.try_acquire(ACCOUNT, SLOW, 1)
        assert not refusal.allowed
        assert PART_INTERVAL_S - SLACK_S < refusal.wait_s <= PART_INTERVAL_S
        # Four parts need four intervals of refill.
        four = await limiter.try_acquire(ACCOUNT, SLOW, 4)
        assert 4 * PART_INTERVAL_S - SLACK_S < four.wait_s <= 4 * PART_INTERVAL_S

    run(redis_url, scenario)


def test_a_stopped_account_takes_nothing_and_says_why_in_the_same_call(redis_url: str) -> None:
    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        await client.set(keys.account_block(ACCOUNT), "account acct stopped: bad credentials")
        # Not asked to look: the stop is the caller's business.
        assert (await limiter.try_acquire(ACCOUNT, SLOW, 1)).stopped is None
        stopped = await limiter.try_acquire(ACCOUNT, SLOW, 5, unless_stopped=True)
        assert not stopped.allowed
        assert stopped.stopped == "account acct stopped: bad credentials"
        await client.delete(keys.account_block(ACCOUNT))
        # It took nothing: 5 of the 6 parts of the burst are still there (1 taken above).
        assert (await limiter.try_acquire(ACCOUNT, SLOW, 5, unless_stopped=True)).allowed

    run(redis_url, scenario)


def test_a_request_that_fits_soon_enough_is_booked_and_the_next_waits_behind_it(
    redis_url: str,
) -> None:
    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        assert (await limiter.try_acquire(ACCOUNT, SLOW, 6)).allowed  # the whole burst
        # One part fits in 0.5 s: booked within 0.6 s, taken now, sent after its wait.
        booked = await limiter.try_acquire(ACCOUNT, SLOW, 1, book_ahead_s=0.6)
        assert booked.allowed
        assert PART_INTERVAL_S - SLACK_S < booked.wait_s <= PART_INTERVAL_S
        # The next part's slot is after the booked one's: 1 s away, beyond
        # 0.6; the refusal says when it could be booked, 0.4 s from now.
        refusal = await limiter.try_acquire(ACCOUNT, SLOW, 1, book_ahead_s=0.6)
        assert not refusal.allowed
        assert 2 * PART_INTERVAL_S - 0.6 - SLACK_S < refusal.wait_s <= 2 * PART_INTERVAL_S - 0.6
        # The refusal took nothing: a booking within 1.1 s gets that same slot.
        second = await limiter.try_acquire(ACCOUNT, SLOW, 1, book_ahead_s=1.1)
        assert second.allowed
        assert 2 * PART_INTERVAL_S - SLACK_S < second.wait_s <= 2 * PART_INTERVAL_S

    run(redis_url, scenario)


def test_a_saturated_account_keeps_its_reserve_for_a_high_priority_request(
    redis_url: str,
) -> None:
    # 10 parts/s, 1 s of burst: the reserve is a tenth of it, one part.
    limits = Limits(messages_per_second=10, requests_per_second=1000, burst_s=1)
    reserve_parts = round(limits.messages_per_second * limits.burst_s * HIGH_RESERVE_SHARE)
    assert reserve_parts == 1

    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        normal, high = limiters
        taken = 0
        while (await normal.try_acquire(ACCOUNT, limits, 1, leave_reserve=True)).allowed:
            taken += 1
        assert taken == 10 - reserve_parts
        # However far ahead a normal request asks to book, it books at most
        # half the reserve ahead: refused, told to come back once the slot
        # is within that.
        refusal = await normal.try_acquire(ACCOUNT, limits, 1, 0.5, leave_reserve=True)
        assert not refusal.allowed
        assert 0.1 - 0.05 - SLACK_S < refusal.wait_s <= 0.1 - 0.05
        # A high-priority request goes at once, on the reserve.
        code = await high.try_acquire(ACCOUNT, limits, 1, 0.5)
        assert code.allowed and code.wait_s == 0
        # It took the reserve: the next high request waits its turn too.
        assert not (await high.try_acquire(ACCOUNT, limits, 1)).allowed

    run(redis_url, scenario, clients=2)


@pytest.mark.parametrize(
    ("messages_per_second", "burst_s"), [(400, 0.025), (30, 0.1), (7, 0.3), (50_000, 0.001)]
)
def test_a_request_of_exactly_the_burst_goes_whatever_the_fractions(
    redis_url: str, messages_per_second: float, burst_s: float
) -> None:
    """Adapters size requests to the burst: such a request must fit, however
    the burst's seconds round in binary."""
    limits = Limits(messages_per_second, requests_per_second=1000, burst_s=burst_s)
    cost_parts = int(messages_per_second * burst_s)  # as `Adapter.burst_parts`

    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        assert (await limiter.try_acquire(ACCOUNT, limits, cost_parts)).allowed
        took_s = await wait_until_admitted(limiter, limits, cost_parts, timeout_s=2)
        assert took_s < cost_parts / messages_per_second + SLACK_S

    run(redis_url, scenario)


def test_requests_per_second_binds_independently_of_parts(redis_url: str) -> None:
    limits = Limits(messages_per_second=1_000_000, requests_per_second=2, burst_s=2)

    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        # Four one-part requests: the parts budget has room for a million.
        admitted, refusal = await admitted_in_a_row(limiter, limits)
        assert admitted == 4  # requests_per_second × burst_s
        assert 0.5 - SLACK_S < refusal.wait_s <= 0.5

    run(redis_url, scenario)


def test_parts_bind_while_requests_have_room(redis_url: str) -> None:
    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        assert (await limiter.try_acquire(ACCOUNT, SLOW, 6)).allowed
        # 999 more requests would fit, but not one more part.
        assert not (await limiter.try_acquire(ACCOUNT, SLOW, 1)).allowed

    run(redis_url, scenario)


def test_a_request_costlier_than_the_burst_waits_for_a_full_bucket_and_pays_in_full(
    redis_url: str,
) -> None:
    """Adapters split requests at messages_per_second × burst_s, but a request
    can still cost more than the burst: one recipient whose message has more
    parts than that goes alone, and throttling shrinks the burst under
    requests already sized. Such a request is admitted once the account's
    whole burst is available, never before, and it is charged every part, so
    the long-run rate holds; it is never refused forever."""

    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        assert (await limiter.try_acquire(ACCOUNT, SLOW, 1)).allowed
        # One part of six is spent: the ten-part request waits for the refill.
        early = await limiter.try_acquire(ACCOUNT, SLOW, 10)
        assert not early.allowed
        assert PART_INTERVAL_S - SLACK_S < early.wait_s <= PART_INTERVAL_S
        took_s = await wait_until_admitted(limiter, SLOW, 10, timeout_s=2)
        assert took_s < early.wait_s + SLACK_S
        # Charged ten parts: the next part waits 10 - 6 + 1 intervals.
        after = await limiter.try_acquire(ACCOUNT, SLOW, 1)
        assert not after.allowed
        assert 5 * PART_INTERVAL_S - SLACK_S < after.wait_s <= 5 * PART_INTERVAL_S

    run(redis_url, scenario)


def test_a_request_costlier_than_a_throttled_burst_still_goes(redis_url: str) -> None:
    """After a 429 the account's burst is half its configured size, while the
    adapter still sizes requests to the whole configured burst."""
    limits = Limits(messages_per_second=4, requests_per_second=1000, burst_s=1)

    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        assert await limiter.throttled(ACCOUNT, None) == 0.5
        took_s = await wait_until_admitted(limiter, limits, 4, timeout_s=2)
        assert took_s < SLACK_S
        # Four parts at two per second: the next request of four waits 2 s.
        refusal = await limiter.try_acquire(ACCOUNT, limits, 4)
        assert 2 - SLACK_S < refusal.wait_s <= 2

    run(redis_url, scenario)


def test_a_request_interval_longer_than_the_burst_still_goes(redis_url: str) -> None:
    """At the factor floor, 5 requests/s become one per 12.8 s: longer than a
    1 s burst. Requests still go, one per interval."""
    limits = Limits(messages_per_second=1000, requests_per_second=5, burst_s=1)

    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        await client.hset(limiter_key(ACCOUNT), "factor", repr(MIN_FACTOR))
        await set_throttle_state(client, MIN_FACTOR, ago_s=1)
        assert (await limiter.try_acquire(ACCOUNT, limits, 1)).allowed
        refusal = await limiter.try_acquire(ACCOUNT, limits, 1)
        interval_s = 1 / (5 * MIN_FACTOR)
        assert interval_s - SLACK_S < refusal.wait_s <= interval_s

    run(redis_url, scenario)


def test_fast_accounts_are_charged_every_part(redis_url: str) -> None:
    """At 50,000 parts/s a part is 20 µs of capacity: the stored schedule must
    keep microseconds, or one-part requests would cost nothing (or 100 µs)."""
    limits = Limits(messages_per_second=50_000, requests_per_second=10_000_000, burst_s=5)

    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        # Spend two seconds of the burst, so the schedule runs ahead of the clock.
        assert (await limiter.try_acquire(ACCOUNT, limits, 100_000)).allowed
        before = await limiter_field(client, "tat_m")
        for _ in range(500):
            assert (await limiter.try_acquire(ACCOUNT, limits, 1)).allowed
        after = await limiter_field(client, "tat_m")
        assert after - before == pytest.approx(500 / 50_000, abs=1e-5)

    run(redis_url, scenario)


# --- shared by every worker --------------------------------------------------------


def test_two_hosts_share_one_budget(redis_url: str) -> None:
    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        first, second = limiters
        admitted = {0: 0, 1: 0}
        for turn in range(12):
            if (await limiters[turn % 2].try_acquire(ACCOUNT, SLOW, 1)).allowed:
                admitted[turn % 2] += 1
        assert admitted == {0: 3, 1: 3}
        assert not (await first.try_acquire(ACCOUNT, SLOW, 1)).allowed
        assert not (await second.try_acquire(ACCOUNT, SLOW, 1)).allowed

    run(redis_url, scenario, clients=2)


def test_a_refused_acquire_consumes_nothing(redis_url: str) -> None:
    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        first, second = limiters
        assert (await first.try_acquire(ACCOUNT, SLOW, 6)).allowed
        schedule = (await limiter_field(client, "tat_m"), await limiter_field(client, "tat_r"))
        refusals = [await second.try_acquire(ACCOUNT, SLOW, 3) for _ in range(50)]
        assert not any(d.allowed for d in refusals)
        assert schedule == (
            await limiter_field(client, "tat_m"),
            await limiter_field(client, "tat_r"),
        )
        # Fifty refusals later, the first part still goes after one interval.
        took_s = await wait_until_admitted(first, SLOW, 1, timeout_s=2)
        assert took_s < PART_INTERVAL_S + SLACK_S

    run(redis_url, scenario, clients=2)


def test_accounts_do_not_share_budgets(redis_url: str) -> None:
    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        assert (await limiter.try_acquire(ACCOUNT, SLOW, 6)).allowed
        assert not (await limiter.try_acquire(ACCOUNT, SLOW, 1)).allowed
        assert (await limiter.try_acquire("other", SLOW, 6)).allowed

    run(redis_url, scenario)


# --- provider throttling -----------------------------------------------------------


def test_a_429_halves_the_rate_for_every_worker_and_blocks_until_retry_after(
    redis_url: str,
) -> None:
    limits = Limits(messages_per_second=4, requests_per_second=1000, burst_s=1)

    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        first, second = limiters
        assert (await first.try_acquire(ACCOUNT, limits, 1)).allowed
        assert await first.throttled(ACCOUNT, 1.0) == 0.5
        # The other host is blocked for Retry-After, whatever its budget.
        blocked = await second.try_acquire(ACCOUNT, limits, 1)
        assert not blocked.allowed and blocked.factor == 0.5
        assert 1.0 - SLACK_S < blocked.wait_s <= 1.0
        took_s = await wait_until_admitted(second, limits, 1, timeout_s=3)
        assert blocked.wait_s - SLACK_S < took_s < blocked.wait_s + SLACK_S
        # Then half the burst (2 parts, one already taken), and half the rate.
        admitted, refusal = await admitted_in_a_row(second, limits)
        assert admitted == 1
        assert 0.5 - SLACK_S < refusal.wait_s <= 0.5 and refusal.factor == 0.5

    run(redis_url, scenario, clients=2)


def test_repeated_429s_within_a_second_halve_only_once(redis_url: str) -> None:
    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        first, second = limiters
        assert await first.throttled(ACCOUNT, 2.0) == 0.5
        # Every worker sees the same burst of 429s.
        factors = [await limiters[i % 2].throttled(ACCOUNT, 0.5) for i in range(10)]
        assert factors == [0.5] * 10
        # A shorter Retry-After never shortens the block.
        blocked = await second.try_acquire(ACCOUNT, SLOW, 1)
        assert not blocked.allowed and 2.0 - SLACK_S < blocked.wait_s <= 2.0

    run(redis_url, scenario, clients=2)


def test_429s_a_second_apart_halve_again_down_to_a_floor(redis_url: str) -> None:
    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        factors = [await limiter.throttled(ACCOUNT, None)]
        for _ in range(8):
            # The last 429 was 1.5 s ago (and recovery needs 10 s).
            await set_throttle_state(client, factors[-1], ago_s=1.5)
            factors.append(await limiter.throttled(ACCOUNT, None))
        assert factors == [0.5, 0.25, 0.125, 1 / 16, 1 / 32, 1 / 64, 1 / 64, 1 / 64, 1 / 64]
        assert MIN_FACTOR == 1 / 64
        assert (await limiter.try_acquire(ACCOUNT, SLOW, 1)).factor == MIN_FACTOR

    run(redis_url, scenario)


def test_a_steady_stream_of_429s_keeps_halving_once_a_second(redis_url: str) -> None:
    """429s without Retry-After, 0.5 s apart: each second still halves once."""

    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        await set_throttle_state(client, 0.5, ago_s=0.5, halved_ago_s=1.0)
        assert await limiter.throttled(ACCOUNT, None) == 0.25
        await set_throttle_state(client, 0.25, ago_s=0.5, halved_ago_s=0.5)
        assert await limiter.throttled(ACCOUNT, None) == 0.25

    run(redis_url, scenario)


@pytest.mark.parametrize(
    ("factor", "ago_s", "expected"),
    [
        (0.5, 5, 0.5),  # less than 10 s without a 429: no step yet
        (0.5, 10.5, 0.5 * RECOVERY_GROWTH),
        (0.5, 25, 0.5 * RECOVERY_GROWTH**2),
        (0.5, 75, 0.5 * RECOVERY_GROWTH**7),
        (0.5, 85, 1.0),  # 0.5 × 1.1^8 > 1: never above the configured rate
        (MIN_FACTOR, 300, MIN_FACTOR * RECOVERY_GROWTH**30),
        (MIN_FACTOR, 3000, 1.0),
    ],
)
def test_the_rate_climbs_back_ten_percent_per_ten_seconds_without_429s(
    redis_url: str, factor: float, ago_s: float, expected: float
) -> None:
    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        await set_throttle_state(client, factor, ago_s)
        decision = await limiter.try_acquire(ACCOUNT, SLOW, 1)
        assert decision.factor == pytest.approx(expected, rel=1e-9)

    run(redis_url, scenario)


def test_a_recovered_factor_widens_the_burst(redis_url: str) -> None:
    limits = Limits(messages_per_second=10, requests_per_second=1000, burst_s=1)

    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        await set_throttle_state(client, 0.5, ago_s=25)
        admitted, refusal = await admitted_in_a_row(limiter, limits)
        assert admitted == 6  # 10 parts/s × 0.605 × 1 s, whole parts
        assert refusal.factor == pytest.approx(0.605)

    run(redis_url, scenario)


def test_a_429_after_recovery_halves_the_recovered_factor(redis_url: str) -> None:
    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        await set_throttle_state(client, 0.5, ago_s=25)
        assert await limiter.throttled(ACCOUNT, None) == pytest.approx(0.605 / 2)
        # And the recovery clock starts again from this 429.
        assert (await limiter.try_acquire(ACCOUNT, SLOW, 1)).factor == pytest.approx(0.3025)

    run(redis_url, scenario)


# --- hostile figures ---------------------------------------------------------------


@pytest.mark.parametrize("retry_after_s", [1e12, float("inf"), 1e308])
def test_a_retry_after_of_any_size_blocks_at_most_the_limiters_lifetime(
    redis_url: str, retry_after_s: float
) -> None:
    """The adapters cap Retry-After at retry_max_s; the limiter holds on its
    own too: no float that Lua prints as 1e+18 or inf reaches a wait."""

    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        await limiter.throttled(ACCOUNT, retry_after_s)
        refusal = await limiter.try_acquire(ACCOUNT, SLOW, 1)
        assert not refusal.allowed
        assert MAX_WAIT_S - 5 < refusal.wait_s <= MAX_WAIT_S
        assert await limiter_field(client, "until") <= await server_now_s(client) + MAX_WAIT_S

    run(redis_url, scenario)


def test_a_retry_after_that_is_not_a_number_does_not_block(redis_url: str) -> None:
    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        await limiter.throttled(ACCOUNT, float("nan"))
        assert (await limiter.try_acquire(ACCOUNT, SLOW, 1)).allowed

    run(redis_url, scenario)


def test_a_wait_longer_than_the_limiters_lifetime_is_a_whole_number_capped(
    redis_url: str,
) -> None:
    """One part in a billion seconds: the second part's wait is 10^15 µs,
    which Lua's tostring writes as 1e+15."""
    glacial = Limits(messages_per_second=1e-9, requests_per_second=1000, burst_s=1)

    async def scenario(limiters: list[RateLimiter], client: aioredis.Redis) -> None:
        (limiter,) = limiters
        assert (await limiter.try_acquire(ACCOUNT, glacial, 1)).allowed
        refusal = await limiter.try_acquire(ACCOUNT, glacial, 1)
        assert not refusal.allowed
        assert refusal.wait_s == MAX_WAIT_S

    run(redis_url, scenario)
