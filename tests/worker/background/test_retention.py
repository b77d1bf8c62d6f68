"""Retention (worker/background/retention.py) against a real Valkey: which jobs the
sweep removes, that it removes every key of a job and nothing else, that a
retry wins over a sweep that listed the job, and that sweeping again (or
from two workers) is harmless. No worker runs here."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
import redis
import redis.asyncio as aioredis

from producer import NoSuchJob, Producer
from producer.core import keys
from producer.core.scripts import script
from producer.core.store import iter_outcomes, now_s
from tests.producer.test_control import mark_running, settle, submit
from worker.background import retention
from worker.ops import metrics
from worker.ops.timing import Timing, retention_sweep_s
from worker.pipeline.rate_limit import RateLimiter
from worker.pipeline.sending import ChunkSender
from worker.providers.account import Account
from worker.providers.base import Adapter
from worker.store import ResultsStore

RETENTION_S = 7 * 86400
CHUNK_SIZE = 100
TIMING = Timing.from_recovery(300)


def job_keys(client: redis.Redis, job_id: str) -> set[bytes]:
    found = set(client.scan_iter(match=f"{keys.job(job_id)}:*", count=1000))
    return found | ({keys.job(job_id).encode()} if client.exists(keys.job(job_id)) else set())


def index_entries(client: redis.Redis, job_id: str) -> dict[str, float | None]:
    return {name: client.zscore(name, job_id) for name in retention._INDEXES}


def completed_job(producer: Producer, count: int = 2500) -> str:
    """A job that ran the way workers run one: chunks of 100, a request
    state and a lease per chunk, every recipient accepted."""
    client = producer.redis
    job_id = submit(producer, count)
    mark_running(client, job_id)
    client.hset(keys.job(job_id), "chunk_size", CHUNK_SIZE)
    for chunk_no in range(-(-count // CHUNK_SIZE)):
        client.hset(keys.requests(job_id, chunk_no), "1", '{"s":"done"}')
        client.set(keys.lease(job_id, chunk_no), "token", ex=600)
    assert settle(client, job_id, dict.fromkeys(range(count), "accepted")) == "completed"
    return job_id


def after_retention(client: redis.Redis, job_id: str) -> float:
    """A time at which the job is past retention."""
    finished = client.zscore(keys.FINISHED, job_id)
    assert finished is not None
    return finished + RETENTION_S + 1


def backdate(client: redis.Redis, job_id: str, ago_s: float) -> None:
    """Make the job look as if it had ended ``ago_s`` ago."""
    finished = now_s() - ago_s
    client.hset(keys.job(job_id), "finished_at", repr(finished))
    client.zadd(keys.FINISHED, {job_id: finished})


def mark(client: redis.Redis, job_id: str, cutoff_s: float) -> Any:
    """The first step of a removal alone, as a worker that dies after it leaves it."""
    return script("retention_mark")(
        keys=[keys.job(job_id), *retention._INDEXES],
        args=[job_id, repr(cutoff_s), repr(cutoff_s)],
        client=client,
    )


def remove_batch(client: redis.Redis, job_id: str, batch: list[str]) -> Any:
    """One batch of a removal's keys, not the last: a worker part-way through."""
    return script("retention_remove")(
        keys=[keys.job(job_id), *retention._INDEXES, *batch],
        args=[job_id, "0"],
        client=client,
    )


def assert_listed_at_its_end(producer: Producer, job_id: str) -> None:
    """The job is in ``finished`` scored by its (latest) ``finished_at``."""
    finished_at = producer.status(job_id).finished_at
    assert finished_at is not None
    assert producer.redis.zscore(keys.FINISHED, job_id) == pytest.approx(finished_at.timestamp())


def test_ending_a_job_lists_it_and_a_retry_unlists_it(producer: Producer) -> None:
    client = producer.redis
    job_id = completed_job(producer, 3)
    assert_listed_at_its_end(producer, job_id)
    settle(client, job_id, {0: "failed"})
    assert producer.retry(job_id).state == "queued"
    assert client.zscore(keys.FINISHED, job_id) is None

    cancelled = submit(producer)
    producer.cancel(cancelled)
    assert client.zscore(keys.FINISHED, cancelled) is not None


def test_removes_every_key_of_the_job_and_nothing_else(producer: Producer) -> None:
    client = producer.redis
    old, kept = completed_job(producer), completed_job(producer)
    running = submit(producer, 1200)
    mark_running(client, running)
    others = {job_id: job_keys(client, job_id) for job_id in (kept, running)}
    # Three blocks (messages and outcomes), 25 chunks (requests and lease), the hash.
    assert len(job_keys(client, old)) == 3 * 2 + 25 * 2 + 1

    backdate(client, old, RETENTION_S + 1)
    removed = retention.sweep(client, RETENTION_S)

    assert [(r.job_id, r.keys_removed) for r in removed] == [(old, 57)]
    assert job_keys(client, old) == set()
    assert index_entries(client, old) == dict.fromkeys(retention._INDEXES)
    with pytest.raises(NoSuchJob):
        producer.status(old)
    assert list(producer.results(kept))  # the others are whole
    assert {job_id: job_keys(client, job_id) for job_id in (kept, running)} == others
    assert client.zscore(keys.FINISHED, kept) is not None
    assert [s.job_id for s in producer.jobs()] == [running, kept]


def test_keeps_a_job_until_its_retention_has_passed(producer: Producer) -> None:
    client = producer.redis
    job_id = completed_job(producer, 3)
    before = job_keys(client, job_id)
    assert retention.sweep(client, RETENTION_S, now=after_retention(client, job_id) - 2) == []
    assert job_keys(client, job_id) == before


def test_a_retry_after_the_sweep_listed_the_job_wins(producer: Producer) -> None:
    client = producer.redis
    job_id = completed_job(producer, 3)
    now = after_retention(client, job_id)
    listed = client.zrangebyscore(keys.FINISHED, "-inf", now - RETENTION_S)
    assert listed == [job_id.encode()]
    settle(client, job_id, {1: "failed"})
    assert producer.retry(job_id).state == "queued"  # between the listing and the removal
    before = job_keys(client, job_id)

    removal = retention.remove_job(client, job_id, now - RETENTION_S, now - RETENTION_S)

    assert removal.outcome == "open"
    assert job_keys(client, job_id) == before
    assert producer.status(job_id).state == "queued"
    assert client.zscore(keys.FINISHED, job_id) is None


def test_a_job_that_ended_again_is_kept_for_a_new_retention(producer: Producer) -> None:
    client = producer.redis
    job_id = completed_job(producer, 3)
    # Listed with its first end; it was retried and ended again much later.
    client.zadd(keys.FINISHED, {job_id: now_s() - RETENTION_S - 100})
    assert retention.sweep(client, RETENTION_S) == []
    assert producer.status(job_id).state == "completed"
    assert_listed_at_its_end(producer, job_id)


def test_a_retry_after_the_removal_began_finds_no_job(producer: Producer) -> None:
    client = producer.redis
    job_id = completed_job(producer, 3)
    now = after_retention(client, job_id)
    # A removal that stopped after its mark (the worker died).
    reply = mark(client, job_id, now - RETENTION_S)
    assert reply[0] == b"remove"
    with pytest.raises(NoSuchJob):
        producer.retry(job_id, ["failed"])
    # The next sweep finishes the removal.
    assert [r.job_id for r in retention.sweep(client, RETENTION_S, now=now)] == [job_id]
    assert job_keys(client, job_id) == set()


def test_sweeping_twice_or_from_two_workers_is_harmless(producer: Producer) -> None:
    client = producer.redis
    job_id = completed_job(producer, 3500)  # 4 blocks, 35 chunks: 79 keys
    now = after_retention(client, job_id)
    cutoff = now - RETENTION_S
    # Worker A marks the job and removes a first batch of its keys...
    retention_keys = list(retention.job_data_keys(job_id, 3500, CHUNK_SIZE))
    mark(client, job_id, cutoff)
    first = retention_keys[:10]
    assert remove_batch(client, job_id, first) == 10
    # ...worker B removes the whole job meanwhile...
    assert retention.remove_job(client, job_id, cutoff, cutoff).outcome == "removed"
    # ...and A's next batch finds it gone.
    rest = retention_keys[10:20]
    assert remove_batch(client, job_id, rest) == -1
    assert job_keys(client, job_id) == set()
    # Sweeping again finds nothing; a stale listing is dropped.
    client.zadd(keys.FINISHED, {job_id: cutoff - 10})
    assert retention.sweep(client, RETENTION_S, now=now) == []
    assert retention.remove_job(client, job_id, cutoff, cutoff).outcome == "gone"
    assert index_entries(client, job_id) == dict.fromkeys(retention._INDEXES)
    assert job_keys(client, job_id) == set()


def test_a_big_job_is_removed_in_batches(producer: Producer, monkeypatch: Any) -> None:
    monkeypatch.setattr(retention, "KEYS_PER_CALL", 7)
    client = producer.redis
    job_id = completed_job(producer, 2500)
    removed = retention.sweep(client, RETENTION_S, now=after_retention(client, job_id))
    assert [(r.job_id, r.keys_removed) for r in removed] == [(job_id, 57)]
    assert job_keys(client, job_id) == set()


def test_a_cancelled_job_waits_for_its_sweep(producer: Producer, monkeypatch: Any) -> None:
    monkeypatch.setattr(retention, "SWEEP_BATCH", 2)
    client = producer.redis
    # More unsettled jobs than one read of the listing: the sweep reads past them.
    unsettled = [submit(producer) for _ in range(3)]
    for job_id in unsettled:
        producer.cancel(job_id)
    settled = submit(producer)
    producer.cancel(settled)
    settle(client, settled, dict.fromkeys(range(3), "cancelled"), attempts=0)
    for job_id in [*unsettled, settled]:  # all ended long ago, in that order
        client.hset(keys.job(job_id), "finished_at", "1000.0")
        client.zadd(keys.FINISHED, {job_id: 1000.0})
    now = 1000.0 + RETENTION_S + 1

    removed = retention.sweep(client, RETENTION_S, now=now)
    assert [r.job_id for r in removed] == [settled]
    assert all(producer.status(job_id).state == "cancelled" for job_id in unsettled)

    # A cancel sweep that never finished holds the job only for a day more.
    later = retention.sweep(client, RETENTION_S, now=now + retention.UNSETTLED_GRACE_S)
    assert sorted(r.job_id for r in later) == sorted(unsettled)


def test_jobs_that_ended_before_the_listing_are_backfilled(producer: Producer) -> None:
    client = producer.redis
    ended = [completed_job(producer, 3) for _ in range(3)]
    running = submit(producer)
    mark_running(client, running)
    client.delete(keys.FINISHED, keys.ACTIVE)  # as before this version
    assert retention.backfill(client) == 3
    assert retention.backfill(client) == 0
    assert {m.decode() for m in client.zrange(keys.FINISHED, 0, -1)} == set(ended)
    # The running job is watched again (worker/background/watchdog.py), the ended ones not.
    assert [m.decode() for m in client.zrange(keys.ACTIVE, 0, -1)] == [running]
    for job_id in ended:
        assert_listed_at_its_end(producer, job_id)


def test_a_cancelled_job_whose_sweep_never_settled_is_watched_again(producer: Producer) -> None:
    """Cancelled before this version, its sweep lost: the watchdog settles it
    only if it is listed as active; a settled cancelled job is not."""
    client = producer.redis
    unsettled, settled = submit(producer), submit(producer)
    for job_id in (unsettled, settled):
        producer.cancel(job_id)
    settle(client, settled, {0: "cancelled", 1: "cancelled", 2: "cancelled"})
    client.delete(keys.ACTIVE)  # as before this version
    retention.backfill(client)
    assert [m.decode() for m in client.zrange(keys.ACTIVE, 0, -1)] == [unsettled]


def test_a_late_commit_to_a_removed_job_writes_nothing(producer: Producer) -> None:
    client = producer.redis
    job_id = completed_job(producer, 3)
    retention.sweep(client, RETENTION_S, now=after_retention(client, job_id))
    state = settle(client, job_id, {0: "accepted"})
    assert state == "gone"
    assert job_keys(client, job_id) == set()
    assert client.zscore(keys.FINISHED, job_id) is None


ACCOUNT = Account(
    name="ro-removed",
    kind="sendbulk",
    base_url="http://127.0.0.1:9",
    default_region="RO",
    sender=None,
    messages_per_second=10,
    requests_per_second=10,
    burst_s=1,
    batch_size=100,
    max_parts=1,
    max_attempts=3,
    retry_base_s=1,
    retry_max_s=10,
    number_format=None,
    price_per_part=None,
    currency=None,
)


def failed_in_metrics() -> float:
    labels = {"account": ACCOUNT.name, "kind": ACCOUNT.kind, "status": "failed"}
    return metrics.local_registry().get_sample_value("smsbulk_recipients_total", labels) or 0.0


@pytest.mark.parametrize("removed", [False, True])
def test_a_pass_counts_only_outcomes_it_wrote(
    producer: Producer, redis_url: str, removed: bool
) -> None:
    """A pass whose job was removed after it read the chunk writes nothing
    (`gone`) and counts nothing in smsbulk_recipients_total."""
    client = producer.redis
    job_id = submit(producer, 3)
    mark_running(client, job_id)
    client.hset(keys.job(job_id), "chunk_size", CHUNK_SIZE)

    async def blocked_pass() -> None:
        async with aioredis.Redis.from_url(redis_url) as async_client:
            store = ResultsStore(async_client)
            job = await store.job(job_id)
            assert job is not None
            await store.block_account(ACCOUNT.name, "bad credentials")
            if removed:
                client.delete(keys.job(job_id))  # the last step of a removal
            adapter = cast(Adapter, SimpleNamespace(account=ACCOUNT))
            sender = ChunkSender(store, cast(RateLimiter, None), adapter, job, 0, TIMING)
            await sender.run(cast(aiohttp.ClientSession, None))

    before = failed_in_metrics()
    asyncio.run(blocked_pass())
    assert failed_in_metrics() == before + (0 if removed else 3)
    assert client.exists(keys.job(job_id)) == (0 if removed else 1)


def test_results_of_a_job_removed_while_read_end_early(producer: Producer) -> None:
    client = producer.redis
    job_id = completed_job(producer, 2500)
    records = iter_outcomes(client, job_id, blocks_per_read=1)
    first = [next(records) for _ in range(1000)]
    assert retention.sweep(client, RETENTION_S, now=after_retention(client, job_id))
    assert [r.index for r in first] == list(range(1000))
    assert list(records) == []


@pytest.mark.parametrize(
    ("retention_s", "interval_s"), [(7 * 86400, 60.0), (300, 30.0), (2, 1.0), (0.01, 1.0)]
)
def test_sweep_interval_follows_the_retention(retention_s: float, interval_s: float) -> None:
    assert retention_sweep_s(retention_s) == interval_s
