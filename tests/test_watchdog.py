"""The watchdog (worker/watchdog.py) against a real Valkey and real kombu
messages: what it reads from the queues and the ``unacked`` hash, its claim,
what it does per job state, and the activity index and done bitmap that the
other scripts keep for it. No worker runs here."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from celery import Celery

from producer import Producer, control, keys
from producer.client import broker_app, enqueue_plan
from producer.store import now_s
from tests.test_control import mark_running, settle, submit
from worker import retention, watchdog
from worker.results_store import JobSpec, ResultsStore
from worker.sending import fail_chunk

STALL_S = 20.0


@pytest.fixture
def celery(redis_url: str) -> Iterator[Celery]:
    app = broker_app(redis_url)
    yield app
    app.close()


def send_chunk(celery: Celery, job_id: str, chunk_no: int, **options: Any) -> None:
    """As worker.tasks.enqueue_chunk publishes it."""
    celery.send_task(
        keys.SEND_CHUNK,
        args=[job_id, chunk_no],
        queue=keys.NORMAL_QUEUE,
        argsrepr=f"job_id={job_id}, chunk={chunk_no}",
        **options,
    )


class Recorder:
    """The watchdog's enqueue callbacks, recorded instead of published."""

    def __init__(self) -> None:
        self.plans: list[tuple[str, str]] = []
        self.chunks: list[tuple[str, int, str]] = []

    def plan(self, job_id: str, priority: str) -> None:
        self.plans.append((job_id, priority))

    def chunk(self, job_id: str, chunk_no: int, queue: str) -> None:
        self.chunks.append((job_id, chunk_no, queue))


def make_watchdog(client: redis.Redis) -> tuple[watchdog.Watchdog, Recorder]:
    recorder = Recorder()
    return watchdog.Watchdog(client, STALL_S, recorder.plan, recorder.chunk), recorder


def silence(client: redis.Redis, job_id: str) -> None:
    """Make the job look silent for longer than the stall time."""
    client.zadd(keys.ACTIVE, {job_id: now_s() - STALL_S - 5})


def running_job(producer: Producer, count: int, chunk_size: int) -> str:
    job_id = submit(producer, count)
    mark_running(producer.redis, job_id)
    producer.redis.hset(keys.job(job_id), "chunk_size", chunk_size)
    producer.redis.delete(keys.NORMAL_QUEUE)  # the submission's plan task
    return job_id


# --- the snapshot of the queues and `unacked` ------------------------------------------


def test_the_snapshot_reads_real_kombu_messages_queued_and_unacked(
    celery: Celery, redis_client: redis.Redis
) -> None:
    enqueue_plan(celery, "j1", "normal")
    enqueue_plan(celery, "j2", "high")
    celery.send_task(keys.PLAN_JOB, args=["j3", 40], queue=keys.NORMAL_QUEUE)
    send_chunk(celery, "j1", 3)
    send_chunk(celery, "j1", 4, countdown=5)  # an ETA task
    send_chunk(celery, "j1", 5, priority=5)  # a priority step's own list
    celery.send_task(keys.SEND_CALLBACK, args=["j1"], queue=keys.HIGH_QUEUE)
    redis_client.lpush(keys.NORMAL_QUEUE, b"not json")
    assert redis_client.exists(f"{keys.NORMAL_QUEUE}\x06\x163")
    with celery.connection_for_read() as connection:
        # Delivered and not acknowledged: kombu moves it to `unacked`.
        delivered = connection.default_channel.basic_get(keys.HIGH_QUEUE, no_ack=False)
        assert delivered is not None and redis_client.hlen(watchdog.KOMBU_UNACKED) == 1
        found = watchdog.snapshot(redis_client)
    assert found.chunks == {"j1": {3, 4, 5}}
    assert found.plans == {"j1": [0], "j2": [0], "j3": [40]}


# --- the claim -------------------------------------------------------------------------


def test_a_silent_job_is_claimed_once(redis_client: redis.Redis) -> None:
    now = now_s()
    cutoff = now - STALL_S
    redis_client.zadd(keys.ACTIVE, {"silent": cutoff - 1, "busy": now - 1})
    assert watchdog.claim(redis_client, "silent", cutoff, now)
    assert redis_client.zscore(keys.ACTIVE, "silent") == pytest.approx(now)
    assert not watchdog.claim(redis_client, "silent", cutoff, now)  # another worker's turn
    assert not watchdog.claim(redis_client, "busy", cutoff, now)
    assert not watchdog.claim(redis_client, "unlisted", cutoff, now)
    assert redis_client.zscore(keys.ACTIVE, "unlisted") is None


# --- what it does, per state -----------------------------------------------------------


@pytest.mark.parametrize("state", ["completed", "cancelled", "paused", "scheduled", "gone"])
def test_a_job_that_needs_no_watch_is_unlisted(producer: Producer, state: str) -> None:
    client = producer.redis
    job_id = submit(producer) if state != "scheduled" else submit(producer, schedule_in_s=3600)
    if state == "completed":
        mark_running(client, job_id)
        settle(client, job_id, dict.fromkeys(range(3), "accepted"))
    elif state == "cancelled":  # and settled by its sweep
        producer.cancel(job_id)
        settle(client, job_id, dict.fromkeys(range(3), "cancelled"), attempts=0)
    elif state == "paused":
        producer.pause(job_id)
    elif state == "gone":
        client.delete(keys.job(job_id))
    silence(client, job_id)
    dog, recorder = make_watchdog(client)
    assert dog.sweep() == 0
    assert client.zscore(keys.ACTIVE, job_id) is None
    assert recorder.plans == recorder.chunks == []


def test_a_queued_job_whose_plan_task_was_lost_is_planned_again(producer: Producer) -> None:
    client = producer.redis
    job_id = submit(producer)
    dog, recorder = make_watchdog(client)
    silence(client, job_id)
    assert dog.sweep() == 0  # its plan task waits on the queue
    assert client.delete(keys.NORMAL_QUEUE) == 1  # lost
    assert dog.sweep() == 0  # looked at it a moment ago: not silent any more
    silence(client, job_id)
    assert dog.sweep() == 1
    assert recorder.plans == [(job_id, "normal")]
    assert client.zscore(keys.ACTIVE, job_id) == pytest.approx(now_s(), abs=5)


def test_only_a_running_jobs_lost_chunks_are_enqueued_again(
    producer: Producer, celery: Celery
) -> None:
    client = producer.redis
    job_id = running_job(producer, 1000, 100)  # chunks 0-9
    client.setbit(keys.done(job_id), 0, 1)  # done
    client.setbit(keys.done(job_id), 1, 1)
    client.set(keys.lease(job_id, 2), "token", ex=60)  # a pass runs
    send_chunk(celery, job_id, 5)
    dog, recorder = make_watchdog(client)
    with celery.connection_for_read() as connection:
        # Chunk 5 is delivered (a pass is about to start): in `unacked`.
        delivered = connection.default_channel.basic_get(keys.NORMAL_QUEUE, no_ack=False)
        assert delivered is not None and "chunk=5" in delivered.headers["argsrepr"]
        send_chunk(celery, job_id, 3)  # waiting
        send_chunk(celery, job_id, 4, countdown=5)  # deferred
        send_chunk(celery, "other-job", 6)
        silence(client, job_id)
        assert dog.sweep() == 4
    assert recorder.chunks == [(job_id, c, keys.NORMAL_QUEUE) for c in (6, 7, 8, 9)]


def test_a_follow_up_plan_task_covers_the_chunks_after_it(
    producer: Producer, celery: Celery
) -> None:
    client = producer.redis
    job_id = running_job(producer, 1000, 100)
    for chunk_no in range(5):
        client.setbit(keys.done(job_id), chunk_no, 1)
    celery.send_task(keys.PLAN_JOB, args=[job_id, 7], queue=keys.NORMAL_QUEUE)
    silence(client, job_id)
    dog, recorder = make_watchdog(client)
    assert dog.sweep() == 2
    assert [c for _, c, _ in recorder.chunks] == [5, 6]


def test_a_running_job_with_every_chunk_accounted_for_stays_listed(producer: Producer) -> None:
    client = producer.redis
    job_id = running_job(producer, 300, 100)
    for chunk_no in range(3):
        client.setbit(keys.done(job_id), chunk_no, 1)
    silence(client, job_id)
    dog, recorder = make_watchdog(client)
    assert dog.sweep() == 0 and recorder.chunks == []
    assert client.zscore(keys.ACTIVE, job_id) == pytest.approx(now_s(), abs=5)


# --- the activity index and the done bitmap, kept by the other scripts ----------------


def test_submission_commits_and_completion_keep_the_activity_index(producer: Producer) -> None:
    client = producer.redis
    job_id = submit(producer, 3)
    assert client.zscore(keys.ACTIVE, job_id) is not None  # submitted, queued
    scheduled = submit(producer, schedule_in_s=3600)
    assert client.zscore(keys.ACTIVE, scheduled) is None  # the scheduler's
    mark_running(client, job_id)
    silence(client, job_id)
    settle(client, job_id, {0: "accepted"})
    assert client.zscore(keys.ACTIVE, job_id) == pytest.approx(now_s(), abs=5)
    assert settle(client, job_id, {1: "accepted", 2: "failed"}) == "completed"
    assert client.zscore(keys.ACTIVE, job_id) is None
    # A retry lists it again and forgets which chunks were done.
    client.setbit(keys.done(job_id), 0, 1)
    assert producer.retry(job_id).state == "queued"
    assert client.zscore(keys.ACTIVE, job_id) is not None
    assert not client.exists(keys.done(job_id))
    # A cancel keeps it listed until its sweep has settled every recipient.
    producer.cancel(job_id)
    assert client.zscore(keys.ACTIVE, job_id) is not None
    settle(client, job_id, {2: "cancelled"}, attempts=0)  # the sweep
    assert client.zscore(keys.ACTIVE, job_id) is None


def test_a_failed_chunk_is_done(producer: Producer, redis_url: str) -> None:
    job_id = running_job(producer, 3, 100)

    async def fail() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            store = ResultsStore(client)
            job = await store.job(job_id)
            assert job is not None
            await fail_chunk(store, job, 0, "gave up")
        finally:
            await client.aclose()

    asyncio.run(fail())
    assert producer.status(job_id).counts["failed"] == 3
    assert producer.redis.getbit(keys.done(job_id), 0) == 1


def test_a_pass_that_read_the_job_before_a_retry_marks_no_chunk_done(
    producer: Producer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass ends as a retry reopens the job: the pass saw every outcome
    final, the retry makes some pending again. Its done bit would hide the
    new run's chunk from the watchdog, so it is not set, whether the pass
    marks its chunk before the retry resets the outcomes or after."""
    client = producer.redis
    job_id = running_job(producer, 3, 100)
    assert settle(client, job_id, {0: "accepted", 1: "failed", 2: "accepted"}) == "completed"

    async def read_job() -> JobSpec:
        async with aioredis.Redis.from_url(redis_url) as async_client:
            job = await ResultsStore(async_client).job(job_id)
        assert job is not None
        return job

    async def mark_done(job: JobSpec) -> None:
        async with aioredis.Redis.from_url(redis_url) as async_client:
            await ResultsStore(async_client).mark_chunk_done(job, 0)

    before_retry = asyncio.run(read_job())
    reset = control.reset_outcomes

    def reset_while_a_pass_ends(*args: Any) -> int:
        # Between the reopen and the reset: a pass of the old run ends, and a
        # pass that read the reopened job (and the outcomes not yet reset) ends.
        asyncio.run(mark_done(before_retry))
        asyncio.run(mark_done(asyncio.run(read_job())))
        return reset(*args)

    monkeypatch.setattr(control, "reset_outcomes", reset_while_a_pass_ends)
    assert producer.retry(job_id).state == "queued"
    assert client.getbit(keys.done(job_id), 0) == 0
    asyncio.run(mark_done(before_retry))  # the old run's pass, ending after the retry
    assert client.getbit(keys.done(job_id), 0) == 0
    # A pass of the new run marks its chunk.
    new_run = asyncio.run(read_job())
    assert new_run.run == before_retry.run + 1
    asyncio.run(mark_done(new_run))
    assert client.getbit(keys.done(job_id), 0) == 1


def test_retention_removes_the_done_bitmap_and_the_activity_entry(producer: Producer) -> None:
    client = producer.redis
    job_id = submit(producer, 3)
    mark_running(client, job_id)
    client.setbit(keys.done(job_id), 0, 1)
    assert settle(client, job_id, dict.fromkeys(range(3), "accepted")) == "completed"
    client.zadd(keys.ACTIVE, {job_id: 1.0})  # stale
    finished = client.zscore(keys.FINISHED, job_id)
    assert finished is not None
    removed = retention.sweep(client, 60, now=finished + 61)
    assert [r.job_id for r in removed] == [job_id]
    assert not client.exists(keys.done(job_id))
    assert client.zscore(keys.ACTIVE, job_id) is None
    # A job gone without a removal (listed, no hash) is unlisted everywhere.
    client.zadd(keys.ACTIVE, {"ghost": 1.0})
    client.zadd(keys.FINISHED, {"ghost": 1.0})
    retention.sweep(client, 60)
    assert client.zscore(keys.ACTIVE, "ghost") is None
