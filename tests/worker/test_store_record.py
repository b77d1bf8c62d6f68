"""The worker's view of a job (``ResultsStore.job``) is a typed record."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis

from producer import Producer
from producer.core import keys
from producer.core.settings import JobSettings
from tests.producer.test_control import mark_running, submit
from worker.store import JobRecord, ResultsStore


def read_job(redis_url: str, job_id: str) -> JobRecord | None:
    async def run() -> JobRecord | None:
        async with aioredis.Redis.from_url(redis_url) as client:
            return await ResultsStore(client).job(job_id)

    return asyncio.run(run())


def drop_priority(producer: Producer, job_id: str) -> None:
    """A job stored without a priority (by an older version, say)."""
    spec = json.loads(producer.redis.hget(keys.job(job_id), "spec") or b"")
    del spec["priority"]
    producer.redis.hset(keys.job(job_id), "spec", json.dumps(spec))


def test_the_record_is_typed(producer: Producer, redis_url: str) -> None:
    job_id = producer.submit(
        {"provider": "bulk", "text": "hi", "priority": "high", "messages": [{"to": "0720000000"}]}
    )
    job = read_job(redis_url, job_id)
    assert job is not None and isinstance(job.settings, JobSettings)
    assert (job.settings.provider, job.settings.text, job.settings.priority) == (
        "bulk",
        "hi",
        "high",
    )
    assert (job.state, job.total, job.run) == ("queued", 1, 0)


def test_a_job_stored_without_a_priority_plans_on_the_normal_queue(
    producer: Producer, redis_url: str
) -> None:
    job_id = submit(producer)
    drop_priority(producer, job_id)
    job = read_job(redis_url, job_id)
    assert job is not None and job.settings.priority == "normal"
    mark_running(producer.redis, job_id)
    producer.pause(job_id)
    producer.redis.delete(keys.HIGH_QUEUE, keys.NORMAL_QUEUE)
    assert producer.resume(job_id).state == "queued"
    assert producer.redis.llen(keys.HIGH_QUEUE) == 0
    plans = [json.loads(raw)["headers"] for raw in producer.redis.lrange(keys.NORMAL_QUEUE, 0, -1)]
    assert [(h["task"], h["argsrepr"]) for h in plans] == [(keys.PLAN_JOB, f"job_id={job_id}")]
