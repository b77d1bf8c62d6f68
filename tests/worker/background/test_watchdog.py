"""The watchdog (worker/background/watchdog.py) against a real Valkey and real kombu
messages: what it reads from the queues and the ``unacked`` hash, its claim,
what it does per job state, and the activity index and done bitmap that the
other scripts keep for it. No worker runs here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import redis
import redis.asyncio as aioredis
from celery import Celery

from producer import Producer, control
from producer.client import broker_app, enqueue_plan
from producer.core import keys
from producer.core.scripts import source
from producer.core.store import now_s
from tests.producer.test_control import mark_running, settle, submit
from worker.background import retention, watchdog
from worker.background.releaser import Releaser
from worker.dev.launcher import wait_until
from worker.pipeline.sending import fail_chunk
from worker.store import JobRecord, ResultsStore

STALL_S = 20.0


@pytest.fixture
def celery(redis_url: str) -> Iterator[Celery]:
    app = broker_app(redis_url)
    yield app
    app.close()


def send_chunk(celery: Celery, job_id: str, chunk_no: int, **options: Any) -> None:
    """As producer.client.enqueue_chunk publishes it."""
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


def make_watchdog(client: redis.Redis, **options: Any) -> tuple[watchdog.Watchdog, Recorder]:
    recorder = Recorder()
    return watchdog.Watchdog(client, STALL_S, recorder.plan, recorder.chunk, **options), recorder


@dataclass
class Calls:
    count: int = 0


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> Calls:
    """Count the calls of ``owner.name``, which still does its work."""
    calls = Calls()
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.count += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def lost_chunk_job(producer: Producer) -> str:
    """A running job of 3 chunks: 0 and 1 done, 2's task lost."""
    job_id = running_job(producer, 300, 100)
    producer.redis.setbit(keys.done(job_id), 0, 1)
    producer.redis.setbit(keys.done(job_id), 1, 1)
    return job_id


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
    celery.send_task(keys.SEND_CHUNK, args=["j1", 9], queue=keys.NORMAL_QUEUE)  # another client's
    send_chunk(celery, "j1", 3)
    send_chunk(celery, "j1", 4, countdown=5)  # an ETA task
    send_chunk(celery, "j1", 5, priority=5)  # a priority step's own list
    celery.send_task(keys.SEND_CALLBACK, args=["j1"], queue=keys.HIGH_QUEUE)
    celery.send_task(keys.CANCEL_JOB, args=["j4"], queue=keys.HIGH_QUEUE, argsrepr="job_id=j4")
    redis_client.lpush(keys.NORMAL_QUEUE, b"not json")
    assert redis_client.exists(f"{keys.NORMAL_QUEUE}\x06\x163")
    with celery.connection_for_read() as connection:
        # Delivered and not acknowledged: kombu moves it to `unacked`.
        delivered = connection.default_channel.basic_get(keys.HIGH_QUEUE, no_ack=False)
        assert delivered is not None and redis_client.hlen(watchdog.KOMBU_UNACKED) == 1
        found = watchdog.snapshot(redis_client)
        some = watchdog.snapshot(redis_client, ["j1", "j3"])
    assert found.chunks == {"j1": {3, 4, 5, 9}}
    # j3's plan and j1's chunk 9 have no argsrepr of ours (Celery's repr of
    # the args): read from their bodies.
    assert found.plans == {"j1": {0}, "j2": {0}, "j3": {40}}
    assert found.cancels == {"j4"}
    assert (some.chunks, some.plans, some.cancels) == (
        {"j1": {3, 4, 5, 9}},
        {"j1": {0}, "j3": {40}},
        set(),
    )
    assert watchdog.snapshot(redis_client, []) == watchdog.Snapshot()


@pytest.mark.parametrize("jobs_wanted", [3, watchdog.SNAPSHOT_FILTER_MAX + 1])
def test_the_snapshot_pages_through_every_list_and_unacked(
    celery: Celery, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, jobs_wanted: int
) -> None:
    for chunk_no in range(7):
        send_chunk(celery, "a", chunk_no)
        send_chunk(celery, "b", chunk_no, priority=9)
    for chunk_no in range(5):  # delivered and not acknowledged
        redis_client.hset(
            watchdog.KOMBU_UNACKED,
            f"tag{chunk_no}",
            json.dumps(
                [
                    json.loads(cast(bytes, redis_client.rpop(f"{keys.NORMAL_QUEUE}\x06\x169"))),
                    "",
                    "q",
                ]
            ),
        )
    enqueue_plan(celery, "c", "high")
    monkeypatch.setattr(watchdog, "SNAPSHOT_PAGE", 3)
    redis_client.script_load(source("watchdog_snapshot"))  # no NOSCRIPT retry counted
    calls = count_calls(monkeypatch, redis_client, "evalsha")
    wanted = ["a", "b", "c"] + [f"x{i}" for i in range(jobs_wanted - 3)]
    found = watchdog.snapshot(redis_client, wanted)
    assert found.chunks == {"a": set(range(7)), "b": set(range(7))}
    assert found.plans == {"c": {0}}
    # `unacked` (HSCAN returns a small hash whole), 10 listed messages 3 a call,
    # `unacked` again with the last of them.
    assert calls.count == 5


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


def test_a_parked_chunk_is_not_lost_and_a_released_one_is_the_releasers(
    producer: Producer,
) -> None:
    """A chunk parked until its send window opens has no task anywhere by
    design: the watchdog leaves it to the releaser, which enqueues it once
    due and takes it off the set."""
    client = producer.redis
    job_id = running_job(producer, 300, 100)  # chunks 0-2, no task
    client.zadd(keys.PARKED, {keys.parked(job_id, 1): now_s() + 3600})
    client.zadd(keys.PARKED, {keys.parked(job_id, 2): now_s() - 1})  # due
    dog, recorder = make_watchdog(client)
    silence(client, job_id)
    assert dog.sweep() == 1
    assert recorder.chunks == [(job_id, 0, keys.HIGH_QUEUE)]
    released: list[tuple[str, int]] = []
    releaser = Releaser(client, lambda _: None, lambda j, c: released.append((j, c)))
    assert releaser.release_parked() == 1
    assert released == [(job_id, 2)]
    assert client.zrange(keys.PARKED, 0, -1) == [keys.parked(job_id, 1).encode()]
    assert releaser.release_parked() == 0


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
    # On the high-priority queue: taken next, whatever backlog the job's queue has.
    assert recorder.chunks == [(job_id, c, keys.HIGH_QUEUE) for c in (6, 7, 8, 9)]


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


def test_one_snapshot_per_sweep_for_every_silent_job(
    producer: Producer, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [lost_chunk_job(producer) for _ in range(watchdog.CLAIM_BATCH + 5)]
    for job_id in jobs:
        silence(producer.redis, job_id)
    snapshots = count_calls(monkeypatch, watchdog, "snapshot")
    dog, recorder = make_watchdog(producer.redis)
    assert dog.sweep() == len(jobs)
    assert snapshots.count == 1
    assert sorted(recorder.chunks) == sorted((j, 2, keys.HIGH_QUEUE) for j in jobs)


def test_a_dead_worker_makes_the_watchdog_look_at_every_busy_job_at_once(
    producer: Producer,
) -> None:
    """A job that commits all the time is never silent, yet the task a dead
    worker popped and lost gets another as soon as the death is seen."""
    client = producer.redis
    busy = lost_chunk_job(producer)
    planning = submit(producer)  # queued, its plan task lost with the worker
    client.delete(keys.NORMAL_QUEUE)
    dog, recorder = make_watchdog(client, worker="alive")
    dog.step()  # no death, nothing silent
    assert recorder.chunks == recorder.plans == []
    watchdog.beat(client, "killed")
    client.zadd(keys.WORKERS, {"killed": now_s() - watchdog.WORKER_DEAD_AFTER_S - 1})
    dog.step()
    assert recorder.chunks == [(busy, 2, keys.HIGH_QUEUE)]
    assert recorder.plans == [(planning, "normal")]
    assert client.zscore(keys.WORKERS, "killed") is None  # found once
    dog.step()
    assert len(recorder.chunks) == 1


def test_a_death_whose_look_failed_is_looked_at_again(
    producer: Producer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = producer.redis
    busy = lost_chunk_job(producer)
    client.zadd(keys.WORKERS, {"killed": now_s() - watchdog.WORKER_DEAD_AFTER_S - 1})
    dog, recorder = make_watchdog(client, worker="alive")

    def outage(*_: Any) -> watchdog.Snapshot:
        raise redis.ConnectionError("gone")

    monkeypatch.setattr(watchdog, "snapshot", outage)
    with pytest.raises(redis.ConnectionError):
        dog.step()
    monkeypatch.undo()
    dog.step()
    assert recorder.chunks == [(busy, 2, keys.HIGH_QUEUE)]


def test_heartbeats_and_deaths(redis_client: redis.Redis) -> None:
    watchdog.beat(redis_client, "w1")
    watchdog.beat(redis_client, "w2")
    assert watchdog.reap_dead_workers(redis_client, 5) == {}
    redis_client.zadd(keys.WORKERS, {"w1": 1000.0})
    assert watchdog.reap_dead_workers(redis_client, 5) == {"w1": 1000.0}
    assert watchdog.reap_dead_workers(redis_client, 5) == {}  # one watchdog finds it
    assert redis_client.zrange(keys.WORKERS, 0, -1) == [b"w2"]


def test_a_started_watchdog_beats_for_its_worker(redis_client: redis.Redis) -> None:
    dog, _ = make_watchdog(redis_client, worker="me", interval_s=0.05)
    dog.start()
    try:
        first = redis_client.zscore(keys.WORKERS, "me")
        assert first is not None
        wait_until(lambda: (redis_client.zscore(keys.WORKERS, "me") or 0) > first, 10, "a beat")
    finally:
        dog.stop()
        dog.join(10)
        dog.heartbeat.join(10)


def test_one_watchdog_a_turn_looks_at_silent_jobs(producer: Producer) -> None:
    client = producer.redis
    first, second = lost_chunk_job(producer), lost_chunk_job(producer)
    silence(client, first)
    one, one_did = make_watchdog(client, worker="one")
    other, other_did = make_watchdog(client, worker="other")
    one.step()
    silence(client, second)
    other.step()  # within the turn of the first
    assert [j for j, _, _ in one_did.chunks] == [first] and other_did.chunks == []
    client.delete(keys.WATCHDOG_TURN)  # the turn is over
    other.step()
    assert [j for j, _, _ in other_did.chunks] == [second]


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

    async def read_job() -> JobRecord:
        async with aioredis.Redis.from_url(redis_url) as async_client:
            job = await ResultsStore(async_client).job(job_id)
        assert job is not None
        return job

    async def mark_done(job: JobRecord) -> None:
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
