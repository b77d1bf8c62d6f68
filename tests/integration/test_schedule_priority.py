"""Scheduling, validity and priority against real workers and the sandbox."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from producer.core import keys
from tests.integration.stack import Stack, make_stack, ro_numbers
from worker.dev.launcher import wait_until

pytestmark = pytest.mark.integration


def iso(moment: datetime) -> str:
    return moment.isoformat()


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    built = make_stack(redis_url, tmp_path / "stack", workers=1)
    try:
        yield built
    finally:
        built.stop()


def job(numbers: list[str], **fields: object) -> dict[str, object]:
    return {"provider": "bulk", "text": "hi", "messages": [{"to": n} for n in numbers], **fields}


def test_nothing_is_sent_before_schedule_at_even_across_a_worker_restart(stack: Stack) -> None:
    producer = stack.producer()
    at = datetime.now(UTC) + timedelta(seconds=6)
    job_id = producer.submit(job(ro_numbers(50), schedule_at=iso(at)))
    assert producer.status(job_id).state == "scheduled"
    # Kept in Redis, not in a Celery ETA: the scheduled set holds it, no queue does.
    client = stack.redis()
    assert client.zscore(keys.SCHEDULED, job_id) == pytest.approx(at.timestamp(), abs=0.01)
    stack.workers[0].stop()
    stack.workers.clear()
    assert not any(client.llen(q) for q in keys.WORKER_QUEUES)
    # No worker runs until after the schedule: the job must still go, and not early.
    wait_until(lambda: datetime.now(UTC) > at + timedelta(seconds=1), 10, "the schedule")
    assert stack.sandbox_get("/_sandbox/stats")["items"] == 0
    stack.add_worker()
    status = stack.wait_for(job_id, 60)
    assert status.counts["accepted"] == 50
    sent = stack.sandbox_get("/_sandbox/sent")
    assert len(sent) == 50 and min(row["t"] for row in sent) >= at.timestamp()
    assert client.zscore(keys.SCHEDULED, job_id) is None
    producer.close()


def test_a_job_days_ahead_waits_in_redis(stack: Stack) -> None:
    producer = stack.producer()
    at = datetime.now(UTC) + timedelta(days=3)
    job_id = producer.submit(job(ro_numbers(5), schedule_at=iso(at)))
    client = stack.redis()
    # A few release rounds of the worker pass; the job stays scheduled and unsent.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert producer.status(job_id).state == "scheduled"
        assert client.zscore(keys.SCHEDULED, job_id) == pytest.approx(at.timestamp(), abs=0.01)
        time.sleep(0.5)
    assert not any(client.llen(q) for q in keys.WORKER_QUEUES)
    assert not client.hlen("unacked")
    assert stack.sandbox_get("/_sandbox/stats")["items"] == 0
    producer.close()


def test_schedule_in_the_past_means_now(stack: Stack) -> None:
    producer = stack.producer()
    job_id = producer.submit(
        job(ro_numbers(5), schedule_at=iso(datetime.now(UTC) - timedelta(hours=1)))
    )
    assert producer.status(job_id).state in ("queued", "running", "completed")
    assert stack.wait_for(job_id, 30).counts["accepted"] == 5
    producer.close()


def test_messages_past_their_validity_expire_unsent(stack: Stack) -> None:
    producer = stack.producer()
    # Validity counts from schedule_at: two minutes ago plus one minute has passed.
    start = datetime.now(UTC) - timedelta(minutes=2)
    job_id = producer.submit(job(ro_numbers(20), schedule_at=iso(start), validity_minutes=1))
    status = stack.wait_for(job_id, 30)
    assert status.counts["expired"] == 20
    assert stack.sandbox_get("/_sandbox/stats")["items"] == 0
    result = next(iter(producer.results(job_id)))
    assert (result.status, result.attempts) == ("expired", 0)
    producer.close()


def test_a_high_priority_job_overtakes_a_large_normal_job(redis_url: str, tmp_path: Path) -> None:
    stack = make_stack(
        redis_url, tmp_path / "stack", workers=1, sandbox_args=("--latency-ms", "200")
    )
    producer = stack.producer()
    try:
        big = producer.submit(job(ro_numbers(200_000)))
        wait_until(lambda: producer.status(big).counts["accepted"] >= 4000, 60, "the big job")
        started = time.monotonic()
        otp = producer.submit(job(ro_numbers(10, start=500_000), priority="high"))
        status = stack.wait_for(otp, 30)
        took_s = time.monotonic() - started
        assert status.counts["accepted"] == 10
        print(f"high-priority job done in {took_s:.2f} s")
        assert took_s < 5, f"the high-priority job took {took_s:.1f} s"
        assert producer.status(big).state == "running"
    finally:
        producer.close()
        stack.stop()
