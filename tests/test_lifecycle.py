"""The job lifecycle's scripts against a real Valkey, no worker: every
transition that leaves a job with nothing pending ends it; a retry cut
short is finished by whoever comes next, each block reset once; a cancelled
job stays watched until its sweep has settled it, and the sweep never
waits on a lease beyond its budget.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis

from producer import Producer, control
from producer.core import keys, scripts
from producer.core.store import now_s
from tests.producer.test_control import mark_running, queued_tasks, settle, submit
from worker.background import watchdog
from worker.pipeline.cancelling import Sweep, sweep_cancelled
from worker.store import JobRecord, ResultsStore

T = TypeVar("T")
STALL_S = 20.0


def with_store(redis_url: str, use: Callable[[ResultsStore], Awaitable[T]]) -> T:
    async def run() -> T:
        async with aioredis.Redis.from_url(redis_url) as client:
            return await use(ResultsStore(client))

    return asyncio.run(run())


def read_job(redis_url: str, job_id: str) -> JobRecord:
    job = with_store(redis_url, lambda store: store.job(job_id))
    assert job is not None
    return job


def state(client: redis.Redis, job_id: str) -> str:
    return bytes(client.hget(keys.job(job_id), "state") or b"").decode()


def watched(client: redis.Redis, job_id: str) -> bool:
    return client.zscore(keys.ACTIVE, job_id) is not None


def retired(client: redis.Redis, job_id: str) -> bool:
    """Listed for retention, not watched any more."""
    return client.zscore(keys.FINISHED, job_id) is not None and not watched(client, job_id)


# --- nothing pending: the job ends ------------------------------------------------------


def test_a_job_whose_last_commit_landed_while_paused_ends_once_resumed(
    producer: Producer, redis_url: str
) -> None:
    client = producer.redis
    job_id = submit(producer)
    mark_running(client, job_id)
    producer.pause(job_id)
    assert settle(client, job_id, dict.fromkeys(range(3), "accepted")) == "paused"
    assert producer.status(job_id).counts["pending"] == 0
    assert producer.resume(job_id).state == "queued"
    # What the plan that follows the resume does first (worker/tasks.py).
    assert with_store(redis_url, lambda store: store.finish_if_final(job_id))
    status = producer.status(job_id)
    assert status.state == "completed" and status.finished_at is not None
    assert retired(client, job_id)
    assert not with_store(redis_url, lambda store: store.finish_if_final(job_id))


def test_a_pass_that_finds_nothing_left_ends_the_job(producer: Producer, redis_url: str) -> None:
    client = producer.redis
    job_id = submit(producer)
    mark_running(client, job_id)
    producer.pause(job_id)
    settle(client, job_id, dict.fromkeys(range(3), "accepted"))
    producer.resume(job_id)
    mark_running(client, job_id)  # planned again: every chunk's pass is a no-op
    job = read_job(redis_url, job_id)
    with_store(redis_url, lambda store: store.mark_chunk_done(job, 0))
    assert state(client, job_id) == "completed" and retired(client, job_id)


def test_a_job_with_recipients_pending_does_not_end(producer: Producer, redis_url: str) -> None:
    client = producer.redis
    job_id = submit(producer)
    mark_running(client, job_id)
    settle(client, job_id, {0: "accepted", 1: "failed"})
    job = read_job(redis_url, job_id)
    with_store(redis_url, lambda store: store.mark_chunk_done(job, 0))
    assert not with_store(redis_url, lambda store: store.finish_if_final(job_id))
    assert state(client, job_id) == "running" and watched(client, job_id)


# --- retry: one step that cannot be half done ----------------------------------------


def failed_job(producer: Producer, total: int = 2500) -> str:
    """A completed job of three blocks, every other recipient failed."""
    client = producer.redis
    job_id = submit(producer, total)
    mark_running(client, job_id)
    statuses = {i: "failed" if i % 2 else "accepted" for i in range(total)}
    assert settle(client, job_id, statuses) == "completed"
    client.setbit(keys.done(job_id), 0, 1)
    return job_id


def reset_block(client: redis.Redis, job_id: str, block_no: int) -> int:
    """One block's step of the reset, as ``control.reset_outcomes`` takes it."""
    script = scripts.script("reset_outcomes")
    block = keys.outcomes(job_id, block_no)
    return int(script(keys=[keys.job(job_id), block], args=[block_no, 1], client=client))


def test_a_reopened_job_records_its_reset_and_never_completes_before_it(
    producer: Producer, redis_url: str
) -> None:
    client = producer.redis
    job_id = failed_job(producer)
    assert control.reopen_for_retry(client, job_id, ["failed"]) == ("queued", True)
    fields = client.hmget(keys.job(job_id), ["retry", "retry_next", "finished_at"])
    assert fields == [json.dumps(["f"]).encode(), b"0", None]
    assert watched(client, job_id) and client.zscore(keys.FINISHED, job_id) is None
    # Its counters still say every recipient is final: nothing may end it now.
    assert producer.status(job_id).counts["pending"] == 0
    assert not with_store(redis_url, lambda store: store.finish_if_final(job_id))
    settle(client, job_id, {0: "accepted"})  # a stale pass's commit
    assert state(client, job_id) == "queued"


def test_a_retry_cut_short_is_finished_by_the_next_caller_each_block_once(
    producer: Producer, redis_url: str
) -> None:
    client = producer.redis
    job_id = failed_job(producer)
    run_before = read_job(redis_url, job_id).run
    control.reopen_for_retry(client, job_id, ["failed"])
    assert reset_block(client, job_id, 0) == 500  # then the caller died
    assert reset_block(client, job_id, 0) == -1  # reset already
    assert reset_block(client, job_id, 2) == -1  # not the next one owed
    assert control.restart_run(client, job_id) == run_before  # not before every block
    assert producer.status(job_id).counts["pending"] == 500

    # A stale pass sends a reset recipient and it fails again: the next
    # caller (the plan task) must not reset block 0 a second time.
    settle(client, job_id, {1: "failed"})
    assert control.continue_retry(client, job_id)
    status = producer.status(job_id)
    assert status.counts["pending"] == 1249 and status.counts["failed"] == 1
    job = read_job(redis_url, job_id)
    assert job.run == run_before + 1
    assert not client.exists(keys.done(job_id))
    assert client.hmget(keys.job(job_id), ["retry", "retry_next"]) == [None, None]
    # Done: calling again changes nothing.
    assert control.continue_retry(client, job_id)
    assert producer.status(job_id).counts == status.counts
    assert read_job(redis_url, job_id).run == job.run
    # The new run ends the job as usual.
    assert settle(client, job_id, {i: "accepted" for i in range(1, 2500, 2)}) == "completed"
    assert retired(client, job_id)


def test_a_reset_out_of_budget_says_so_and_the_next_call_goes_on(producer: Producer) -> None:
    client = producer.redis
    job_id = failed_job(producer)
    control.reopen_for_retry(client, job_id, ["failed"])
    assert not control.continue_retry(client, job_id, budget_s=-1.0)  # one block
    assert client.hget(keys.job(job_id), "retry_next") == b"1"
    assert producer.status(job_id).counts["pending"] == 500
    assert not control.continue_retry(client, job_id, budget_s=-1.0)
    assert control.continue_retry(client, job_id, budget_s=-1.0)  # the last block
    assert client.hget(keys.job(job_id), "retry") is None
    assert producer.status(job_id).counts["pending"] == 1250


def test_a_cancel_stops_a_retry_reset_and_its_run(producer: Producer, redis_url: str) -> None:
    client = producer.redis
    job_id = failed_job(producer)
    run_before = read_job(redis_url, job_id).run
    control.reopen_for_retry(client, job_id, ["failed"])
    reset_block(client, job_id, 0)
    producer.cancel(job_id)
    assert client.hmget(keys.job(job_id), ["retry", "retry_next"]) == [None, None]
    # The done bits were the previous run's: the sweep must look at every chunk.
    assert not client.exists(keys.done(job_id))
    assert read_job(redis_url, job_id).run == run_before + 1
    assert control.continue_retry(client, job_id)  # a late caller: nothing owed
    assert producer.status(job_id).counts["pending"] == 500


def test_producer_retry_resets_then_plans(producer: Producer) -> None:
    client = producer.redis
    job_id = failed_job(producer)
    client.delete(keys.HIGH_QUEUE, keys.NORMAL_QUEUE)
    status = producer.retry(job_id, ["failed"])
    assert status.state == "queued" and status.counts["pending"] == 1250
    assert client.hget(keys.job(job_id), "retry") is None
    assert queued_tasks(client) == [(keys.PLAN_JOB, f"job_id={job_id}")]


# --- cancel: watched until settled; a sweep bounded in time ------------------------------


def test_a_cancelled_job_is_watched_until_every_recipient_is_settled(producer: Producer) -> None:
    client = producer.redis
    job_id = submit(producer)
    mark_running(client, job_id)
    before = now_s()
    producer.cancel(job_id)
    score = client.zscore(keys.ACTIVE, job_id)
    assert score is not None and score >= before
    assert settle(client, job_id, {0: "accepted"}) == "cancelled"  # a request in flight ends
    assert watched(client, job_id)
    settle(client, job_id, {1: "cancelled", 2: "cancelled"}, attempts=0)  # the sweep
    assert not watched(client, job_id)
    assert client.zscore(keys.FINISHED, job_id) is not None


def sending_request(client: redis.Redis, job_id: str, chunk_no: int, indices: list[int]) -> None:
    """A request a killed worker left in ``sending``."""
    state_json = {"s": "sending", "a": 1, "t": now_s(), "k": "dead", "i": indices}
    client.hset(keys.requests(job_id, chunk_no), "r1", json.dumps(state_json))


def test_a_sweep_hands_back_a_leased_chunk_and_settles_it_later(
    producer: Producer, redis_url: str
) -> None:
    client = producer.redis
    job_id = submit(producer, 30)
    mark_running(client, job_id)
    client.hset(keys.job(job_id), "chunk_size", 10)  # chunks 0-2
    settle(client, job_id, {0: "accepted"})
    sending_request(client, job_id, 1, [10, 11])
    client.set(keys.lease(job_id, 1), "dead-worker", px=60_000)  # outlives the sweep
    producer.cancel(job_id)
    job = read_job(redis_url, job_id)

    started = time.monotonic()
    sweep: Sweep = with_store(redis_url, lambda store: sweep_cancelled(store, job, 10, 0.5))
    assert time.monotonic() - started < 3
    assert sweep.busy == [1] and 50 < sweep.busy_for_s <= 60
    assert sweep.cancelled == 19  # chunks 0 and 2, but for the accepted one
    assert client.getbit(keys.done(job_id), 0) == client.getbit(keys.done(job_id), 2) == 1
    assert producer.status(job_id).counts["pending"] == 10 and watched(client, job_id)

    client.delete(keys.lease(job_id, 1))  # the dead worker's lease runs out
    sweep = with_store(redis_url, lambda store: sweep_cancelled(store, job, 10, 0.5))
    assert sweep.busy == [] and sweep.cancelled == 10  # only chunk 1 was left
    outcomes = list(producer.results(job_id))
    assert [(o.status, o.error_code) for o in outcomes[10:12]] == [("unknown", "interrupted")] * 2
    assert {o.status for o in outcomes[12:20]} == {"cancelled"}
    assert producer.status(job_id).counts["pending"] == 0
    assert not watched(client, job_id)  # settled
    assert client.hlen(keys.requests(job_id, 1)) == 0


def test_a_sweep_of_a_job_cancelled_before_its_plan_uses_blocks(
    producer: Producer, redis_url: str
) -> None:
    client = producer.redis
    job_id = submit(producer, 1500)
    producer.cancel(job_id)
    job = read_job(redis_url, job_id)
    sweep: Sweep = with_store(redis_url, lambda store: sweep_cancelled(store, job, 10, 5.0))
    assert sweep.busy == [] and sweep.cancelled == 1500
    assert producer.status(job_id).counts["cancelled"] == 1500
    assert not watched(client, job_id)


# --- the watchdog, per state (worker/background/watchdog.py) ---------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args: self.calls.append((name, *args))


def make_watchdog(client: redis.Redis) -> tuple[watchdog.Watchdog, Recorder]:
    seen = Recorder()
    dog = watchdog.Watchdog(client, STALL_S, seen.plan, seen.chunk, enqueue_cancel=seen.cancel)
    return dog, seen


def silence(client: redis.Redis, job_id: str) -> None:
    client.zadd(keys.ACTIVE, {job_id: now_s() - STALL_S - 5})


def test_the_watchdog_publishes_a_silent_unsettled_cancel_again(producer: Producer) -> None:
    client = producer.redis
    job_id = submit(producer)
    mark_running(client, job_id)
    producer.cancel(job_id)
    client.delete(keys.NORMAL_QUEUE)  # the cancel task, lost
    dog, seen = make_watchdog(client)
    dog.sweep()
    assert seen.calls == []  # not silent yet
    silence(client, job_id)
    dog.sweep()
    assert seen.calls == [("cancel", job_id, "normal")]
    assert watched(client, job_id)  # until its sweep settles it

    settle(client, job_id, dict.fromkeys(range(3), "cancelled"), attempts=0)
    client.zadd(keys.ACTIVE, {job_id: now_s() - STALL_S - 5})  # listed, say, by a backfill
    dog.sweep()
    assert seen.calls == [("cancel", job_id, "normal")] and not watched(client, job_id)


def test_the_watchdog_has_a_running_job_with_every_chunk_done_ended(producer: Producer) -> None:
    client = producer.redis
    job_id = submit(producer, 20)
    mark_running(client, job_id)
    client.hset(keys.job(job_id), "chunk_size", 10)
    client.setbit(keys.done(job_id), 0, 1)
    client.set(keys.lease(job_id, 1), "a pass", ex=60)
    silence(client, job_id)
    dog, seen = make_watchdog(client)
    dog.sweep()
    assert seen.calls == []  # chunk 1 is being sent
    client.delete(keys.lease(job_id, 1))
    client.setbit(keys.done(job_id), 1, 1)
    silence(client, job_id)
    dog.sweep()
    assert seen.calls == [("plan", job_id, "normal")]  # its plan task ends it
