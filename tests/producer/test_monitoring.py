"""The accounts' live figures as the rate limiter's scripts meter them
(rate_acquire.lua: parts taken; rate_throttled.lua: 429s), read by
producer.monitoring on a real Valkey."""

from __future__ import annotations

import redis

from producer import monitoring
from producer.core import keys
from producer.core.scripts import script
from worker.pipeline.rate_limit import MAX_WAIT_S, MIN_FACTOR, RECOVERY_GROWTH, RECOVERY_STEP_S


def acquire(client: redis.Redis, parts: int) -> bool:
    allowed, _, _, _ = script("rate_acquire")(
        keys=[keys.rate("bulk")],
        args=[1000, 1000, 10, parts, MIN_FACTOR, RECOVERY_STEP_S, RECOVERY_GROWTH, MAX_WAIT_S, 0],
        client=client,
    )
    return bool(int(allowed))


def throttled(client: redis.Redis) -> None:
    script("rate_throttled")(
        keys=[keys.rate("bulk")],
        args=["0", MIN_FACTOR, RECOVERY_STEP_S, RECOVERY_GROWTH, MAX_WAIT_S],
        client=client,
    )


def test_parts_taken_and_429s_answered_are_metered_for_every_worker(
    redis_client: redis.Redis,
) -> None:
    assert all(acquire(redis_client, parts) for parts in (40, 60, 100))
    for _ in range(3):
        throttled(redis_client)
    (bulk,) = monitoring.account_health(redis_client, ["bulk"])
    # 200 parts within this second, over a window of 5 to 6 s.
    assert 200 / 6 <= bulk["parts_per_second"] <= 200 / 5
    assert bulk["throttled_last_minute"] == 3


def test_a_ring_slot_of_an_older_second_is_started_again(redis_client: redis.Redis) -> None:
    seconds, _ = redis_client.time()
    for second in (seconds, seconds + 1):  # this second's slot, and the next one's
        redis_client.hset(keys.rate("bulk"), f"p{second % 8}", f"{second - 8}:5000")
    assert acquire(redis_client, 7)
    (bulk,) = monitoring.account_health(redis_client, ["bulk"])
    assert 0 < bulk["parts_per_second"] <= 7 / 5  # the old counts are neither read nor added to
