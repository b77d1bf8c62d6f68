"""daily_max_parts against a real Valkey server: one count per account and
UTC day (the server's), shared by every caller."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from producer.core import keys
from tests.worker.pipeline.test_circuit import ACCOUNT
from worker.pipeline.daily_cap import DailyCaps

CAPPED = dataclasses.replace(ACCOUNT, daily_max_parts=10)

Scenario = Callable[[list[DailyCaps], aioredis.Redis], Awaitable[None]]


def run(redis_url: str, scenario: Scenario, clients: int = 1) -> None:
    async def main() -> None:
        connections = [aioredis.Redis.from_url(redis_url) for _ in range(clients)]
        try:
            await scenario([DailyCaps(c) for c in connections], connections[0])
        finally:
            for connection in connections:
                await connection.aclose()

    asyncio.run(main())


async def server_now_s(client: aioredis.Redis) -> float:
    seconds, micros = await client.time()
    return float(seconds) + micros / 1e6


async def used(client: aioredis.Redis) -> int:
    return int(await client.hget(keys.daily_parts(CAPPED.name), "parts") or 0)


def test_takes_up_to_the_cap_exactly_and_refuses_without_taking(redis_url: str) -> None:
    async def scenario(caps: list[DailyCaps], client: aioredis.Redis) -> None:
        assert await caps[0].take(CAPPED, 4) is None
        assert await caps[1].take(CAPPED, 6) is None  # 10 of 10: another worker
        assert await used(client) == 10
        assert await caps[0].take(CAPPED, 1) is not None
        assert await used(client) == 10
        await caps[1].give_back(CAPPED, 3)
        assert await used(client) == 7
        assert await caps[0].take(CAPPED, 4) is not None  # 11 would pass it: nothing taken
        assert await used(client) == 7
        assert await caps[0].take(CAPPED, 3) is None
        assert await used(client) == 10

    run(redis_url, scenario, clients=2)


def test_concurrent_takers_never_pass_the_cap(redis_url: str) -> None:
    async def scenario(caps: list[DailyCaps], client: aioredis.Redis) -> None:
        taken = await asyncio.gather(*(caps[i % 4].take(CAPPED, 3) for i in range(20)))
        assert sum(t is None for t in taken) == 3  # 9 parts; a fourth would make 12
        assert await used(client) == 9

    run(redis_url, scenario, clients=4)


def test_the_wait_is_until_the_next_utc_day_and_the_key_expires(redis_url: str) -> None:
    async def scenario(caps: list[DailyCaps], client: aioredis.Redis) -> None:
        (cap,) = caps
        assert await cap.take(CAPPED, 11) is not None  # more than a whole day's
        now = await server_now_s(client)
        wait = await cap.take(CAPPED, 11)
        assert wait is not None
        expected = 86400 - now % 86400
        assert expected - 1 < wait <= expected
        assert await cap.take(CAPPED, 1) is None
        ttl = await client.ttl(keys.daily_parts(CAPPED.name))
        assert 86400 < ttl <= 2 * 86400

    run(redis_url, scenario)


def test_a_new_day_starts_from_zero_and_yesterdays_parts_are_not_given_back(
    redis_url: str,
) -> None:
    async def scenario(caps: list[DailyCaps], client: aioredis.Redis) -> None:
        (cap,) = caps
        today = int(await server_now_s(client) // 86400)
        key = keys.daily_parts(CAPPED.name)
        await client.hset(key, mapping={"day": today - 1, "parts": 10})
        assert await cap.take(CAPPED, 10) is None
        assert await client.hget(key, "day") == str(today).encode()
        await client.hset(key, mapping={"day": today - 1, "parts": 10})
        await cap.give_back(CAPPED, 5)
        assert await used(client) == 10
        await client.hset(key, mapping={"day": today, "parts": 2})
        await cap.give_back(CAPPED, 5)
        assert await used(client) == 0  # never below zero

    run(redis_url, scenario)


def test_an_account_without_a_cap_makes_no_redis_call() -> None:
    async def main() -> None:
        # Nothing listens there: any call would raise ConnectionError.
        client = aioredis.Redis.from_url("redis://127.0.0.1:9")
        try:
            caps = DailyCaps(client)
            assert ACCOUNT.daily_max_parts is None
            assert await caps.take(ACCOUNT, 10**6) is None
            await caps.give_back(ACCOUNT, 10**6)
        finally:
            await client.aclose()

    asyncio.run(main())
