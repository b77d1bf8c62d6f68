"""The workers' commit script, through ResultsStore.commit, on a real Valkey:
outcomes, per-status counters, the request's fencing and the job's end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
import redis
import redis.asyncio as aioredis

from producer.core import keys
from producer.core.store import StoredOutcome, decode_outcome, now_s
from worker.store import ResultsStore

T = TypeVar("T")
JOB = "commit-test"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    sync = redis.Redis.from_url(redis_url)
    sync.flushall()
    sync.hset(keys.job(JOB), mapping={"state": "running", "total": 1500, "spec": "{}"})
    yield sync
    sync.close()


def run(redis_url: str, use: Callable[[ResultsStore], Awaitable[T]]) -> T:
    async def main() -> T:
        async_client = aioredis.Redis.from_url(redis_url)
        try:
            return await use(ResultsStore(async_client))
        finally:
            await async_client.aclose()

    return asyncio.run(main())


def outcome(status: str, index: int, error: str | None = None) -> StoredOutcome:
    return StoredOutcome(
        status, e164=f"+4072{index:07d}", error=error, attempts=1, updated_at=now_s()
    )


def counters(client: redis.Redis) -> dict[str, int]:
    fields = client.hgetall(keys.job(JOB))
    return {k.decode()[2:]: int(v) for k, v in fields.items() if k.startswith(b"n:")}


def test_outcomes_and_counters_of_a_full_block(client: redis.Redis, redis_url: str) -> None:
    # Error texts with tabs, newlines and quotes: the records' separators are
    # escaped inside an outcome's JSON.
    first = {i: outcome("accepted" if i % 3 else "failed", i, 'a\tb\nc"d') for i in range(1000)}
    assert run(redis_url, lambda store: store.commit(JOB, 0, first)) == "running"
    stored = client.hgetall(keys.outcomes(JOB, 0))
    assert len(stored) == 1000
    assert decode_outcome(stored[b"4"]) == first[4]
    assert counters(client) == {"a": 666, "f": 334}

    # Again, changed: a failed one accepted on retry, a pending one (not
    # final) and an unchanged one: counters move only where the status did.
    second = {0: outcome("accepted", 0), 3: outcome("pending", 3), 1: outcome("accepted", 1)}
    run(redis_url, lambda store: store.commit(JOB, 0, second))
    assert counters(client) == {"a": 667, "f": 332}


def test_the_last_final_outcome_completes_the_job(client: redis.Redis, redis_url: str) -> None:
    run(
        redis_url,
        lambda store: store.commit(JOB, 0, {i: outcome("accepted", i) for i in range(1000)}),
    )
    rest = {i: outcome("rejected", i) for i in range(1000, 1500)}
    assert run(redis_url, lambda store: store.commit(JOB, 1, rest)) == "completed"
    assert client.zscore(keys.FINISHED, JOB) is not None
    assert counters(client) == {"a": 1000, "r": 500}


def test_a_request_no_longer_ours_writes_nothing(client: redis.Redis, redis_url: str) -> None:
    sending = json.dumps({"s": "sending", "t": "other-token"})
    client.hset(keys.requests(JOB, 0), "r1", sending)
    done = {"s": "done"}
    fenced = run(
        redis_url,
        lambda store: store.commit(
            JOB, 0, {0: outcome("accepted", 0)}, request_id="r1", token="our-token", done_state=done
        ),
    )
    assert fenced == "fenced"
    assert client.hlen(keys.outcomes(JOB, 0)) == 0
    assert client.hget(keys.requests(JOB, 0), "r1") == sending.encode()

    ours = run(
        redis_url,
        lambda store: store.commit(
            JOB,
            0,
            {0: outcome("accepted", 0)},
            request_id="r1",
            token="other-token",
            done_state=done,
        ),
    )
    assert ours == "running"
    assert json.loads(client.hget(keys.requests(JOB, 0), "r1") or b"") == done
    assert counters(client) == {"a": 1}
