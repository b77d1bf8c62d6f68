"""Job control against a real Valkey: which states allow cancel, pause,
resume and retry, what each one changes, and how retry resets outcomes.

No worker runs here: tasks the producer publishes stay on the broker's
queues, where the tests read them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from producer import InvalidRetry, JobStateConflict, NoSuchJob, Producer
from producer.core import keys
from producer.core.scripts import script
from producer.core.store import StoredOutcome, now_s
from producer.job import JobStatus
from worker.store import outcome_records

Action = Callable[[Producer, str], JobStatus]


def submit(producer: Producer, count: int = 3, schedule_in_s: float | None = None) -> str:
    job: dict[str, Any] = {
        "provider": "bulk",
        "text": "hi",
        "messages": [{"to": f"07{20000000 + i}"} for i in range(count)],
    }
    if schedule_in_s is not None:
        job["schedule_at"] = (datetime.now(UTC) + timedelta(seconds=schedule_in_s)).isoformat()
    return producer.submit(job)


def settle(client: redis.Redis, job_id: str, statuses: dict[int, str], attempts: int = 1) -> str:
    """Record final outcomes the way a worker does (the workers' commit script)."""
    by_block: dict[int, dict[int, StoredOutcome]] = {}
    for index, status in statuses.items():
        by_block.setdefault(index // keys.BLOCK_SIZE, {})[index] = StoredOutcome(
            status, e164=f"+407{20000000 + index}", attempts=attempts, updated_at=now_s()
        )
    state = ""
    for block_no, outcomes in by_block.items():
        raw = script("commit_outcomes")(
            keys=[
                keys.job(job_id),
                keys.outcomes(job_id, block_no),
                keys.requests(job_id, block_no),
                keys.FINISHED,
                keys.ACTIVE,
            ],
            args=["", "", "{}", repr(now_s()), job_id, outcome_records(outcomes)],
            client=client,
        )
        state = raw.decode() if isinstance(raw, bytes) else str(raw)
    return state


def queued_tasks(client: redis.Redis) -> list[tuple[str, str]]:
    """(task name, argsrepr) of every task waiting on the internal queues."""
    tasks = []
    for queue in (keys.HIGH_QUEUE, keys.NORMAL_QUEUE):
        for raw in client.lrange(queue, 0, -1):
            headers = json.loads(raw)["headers"]
            tasks.append((headers["task"], headers["argsrepr"]))
    return tasks


def mark_running(client: redis.Redis, job_id: str) -> None:
    """What the plan does once it has enqueued the chunks."""
    client.hset(keys.job(job_id), mapping={"state": "running", "chunk_size": 1000})


def job_in(state: str, producer: Producer) -> str:
    """A job in `state`, reached the way the system reaches it."""
    client = producer.redis
    if state == "scheduled":
        return submit(producer, schedule_in_s=3600)
    job_id = submit(producer)
    if state in ("running", "paused", "completed"):
        mark_running(client, job_id)
    if state == "paused":
        producer.pause(job_id)
    elif state == "completed":
        assert settle(client, job_id, dict.fromkeys(range(3), "accepted")) == "completed"
    elif state == "cancelled":
        producer.cancel(job_id)
        settle(client, job_id, dict.fromkeys(range(3), "cancelled"), attempts=0)  # the sweep
    assert producer.status(job_id).state == state
    return job_id


ACTIONS: dict[str, Action] = {
    "cancel": Producer.cancel,
    "pause": Producer.pause,
    "resume": Producer.resume,
    "retry": lambda producer, job_id: producer.retry(job_id, ["failed", "cancelled"]),
}
CONFLICT = "conflict"
# Each state before, then the state after cancel, pause, resume and retry (or a conflict).
TRANSITIONS = [
    ("scheduled", "cancelled", "paused", "scheduled", CONFLICT),
    ("queued", "cancelled", "paused", "queued", CONFLICT),
    ("running", "cancelled", "paused", "running", CONFLICT),
    ("paused", "cancelled", "paused", "queued", CONFLICT),
    ("completed", CONFLICT, CONFLICT, CONFLICT, "queued"),
    ("cancelled", CONFLICT, CONFLICT, CONFLICT, "queued"),
]


@pytest.mark.parametrize(
    ("before", "action", "after"),
    [
        (before, action, after)
        for before, *afters in TRANSITIONS
        for action, after in zip(("cancel", "pause", "resume", "retry"), afters, strict=True)
    ],
)
def test_transition_table(producer: Producer, before: str, action: str, after: str) -> None:
    job_id = job_in(before, producer)
    if before == "completed" and action == "retry":
        settle(producer.redis, job_id, {0: "failed"})  # something for retry to send
    fields_before = producer.redis.hgetall(keys.job(job_id))
    if after == CONFLICT:
        with pytest.raises(JobStateConflict, match=f"job is {before}"):
            ACTIONS[action](producer, job_id)
        assert producer.redis.hgetall(keys.job(job_id)) == fields_before
    else:
        assert ACTIONS[action](producer, job_id).state == after
        assert producer.status(job_id).state == after


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_unknown_job(producer: Producer, action: str) -> None:
    with pytest.raises(NoSuchJob, match="no-such"):
        ACTIONS[action](producer, "no-such")
    assert producer.redis.exists(keys.job("no-such")) == 0


def test_cancel_ends_the_job_unschedules_it_and_asks_for_the_sweep(producer: Producer) -> None:
    client = producer.redis
    job_id = job_in("scheduled", producer)
    assert client.zscore(keys.SCHEDULED, job_id) is not None
    before = now_s()
    status = producer.cancel(job_id)
    assert status.state == "cancelled"
    assert status.finished_at is not None and status.finished_at.timestamp() >= before
    assert client.zscore(keys.SCHEDULED, job_id) is None
    assert queued_tasks(client) == [(keys.CANCEL_JOB, f"job_id={job_id}")]


def test_pause_remembers_where_it_came_from(producer: Producer) -> None:
    client = producer.redis
    scheduled, queued, running = (job_in(s, producer) for s in ("scheduled", "queued", "running"))
    for job_id, state in ((scheduled, "scheduled"), (queued, "queued"), (running, "running")):
        producer.pause(job_id)
        assert client.hget(keys.job(job_id), "paused_from") == state.encode()
    # Pausing again changes nothing; the job still remembers its first state.
    assert producer.pause(running).state == "paused"
    assert client.hget(keys.job(running), "paused_from") == b"running"


def test_resume_plans_again_or_waits_for_the_schedule(producer: Producer) -> None:
    client = producer.redis
    scheduled, running = job_in("scheduled", producer), job_in("running", producer)
    schedule_score = client.zscore(keys.SCHEDULED, scheduled)
    assert schedule_score is not None
    producer.pause(scheduled)
    producer.pause(running)
    client.delete(keys.HIGH_QUEUE, keys.NORMAL_QUEUE)

    # While paused, each look of the workers' releaser pushed it a minute on.
    client.zadd(keys.SCHEDULED, {scheduled: schedule_score + 60})
    assert producer.resume(scheduled).state == "scheduled"
    assert client.zscore(keys.SCHEDULED, scheduled) == schedule_score
    assert queued_tasks(client) == []  # the workers release it when due

    assert producer.resume(running).state == "queued"
    assert queued_tasks(client) == [(keys.PLAN_JOB, f"job_id={running}")]

    # Resuming a job that is not paused changes nothing and plans nothing.
    client.delete(keys.HIGH_QUEUE, keys.NORMAL_QUEUE)
    assert producer.resume(running).state == "queued"
    assert queued_tasks(client) == []


def test_pause_and_cancel_send_nothing_and_only_cancel_sweeps(producer: Producer) -> None:
    client = producer.redis
    job_id = job_in("running", producer)
    client.delete(keys.HIGH_QUEUE, keys.NORMAL_QUEUE)
    producer.pause(job_id)
    assert queued_tasks(client) == []
    producer.cancel(job_id)
    assert queued_tasks(client) == [(keys.CANCEL_JOB, f"job_id={job_id}")]


@pytest.mark.parametrize(
    "statuses", [["accepted"], ["pending"], ["rejected"], ["failed", "bogus"], ["FAILED"]]
)
def test_retry_refuses_statuses_it_does_not_take(producer: Producer, statuses: list[str]) -> None:
    job_id = job_in("completed", producer)
    with pytest.raises(InvalidRetry, match="retry takes failed, unknown, expired, cancelled"):
        producer.retry(job_id, statuses)
    assert producer.status(job_id).state == "completed"


def test_retry_resets_only_the_chosen_statuses(producer: Producer) -> None:
    client = producer.redis
    total = 2500  # three blocks of outcomes
    job_id = submit(producer, total)
    mark_running(client, job_id)
    cycle = ["accepted", "rejected", "failed", "unknown", "expired"]
    assert settle(client, job_id, {i: cycle[i % 5] for i in range(total)}, attempts=3) == (
        "completed"
    )
    client.hset(keys.job(job_id), "callback", "1")  # the job's callback was sent
    before = {r.index: r for r in producer.results(job_id)}
    client.delete(keys.HIGH_QUEUE, keys.NORMAL_QUEUE)

    status = producer.retry(job_id, ["failed", "unknown"])

    assert status.state == "queued" and status.finished_at is None
    assert status.counts == {
        "pending": 1000,
        "accepted": 500,
        "rejected": 500,
        "failed": 0,
        "expired": 500,
        "cancelled": 0,
        "unknown": 0,
    }
    fields = client.hgetall(keys.job(job_id))
    assert b"callback" not in fields  # the retried job's end is reported again
    assert queued_tasks(client) == [(keys.PLAN_JOB, f"job_id={job_id}")]
    for result in producer.results(job_id):
        old = before[result.index]
        if old.status in ("failed", "unknown"):
            assert result.status == "pending" and result.attempts == 0
            assert result.e164 == old.e164 and result.error is None
        else:
            assert result == old


def test_retry_of_a_cancelled_job_resets_its_cancelled_recipients(producer: Producer) -> None:
    client = producer.redis
    job_id = job_in("running", producer)
    settle(client, job_id, {0: "accepted"})
    producer.cancel(job_id)
    settle(client, job_id, {1: "cancelled", 2: "cancelled"}, attempts=0)  # the sweep
    status = producer.retry(job_id, ["cancelled"])
    assert status.state == "queued"
    assert status.counts["pending"] == 2 and status.counts["accepted"] == 1
    assert status.counts["cancelled"] == 0


def test_retry_waits_for_the_cancel_sweep(producer: Producer) -> None:
    """Until the sweep has settled a cancelled job, its pending recipients
    are on their way to ``cancelled``: a retry then would send them."""
    client = producer.redis
    job_id = job_in("running", producer)
    settle(client, job_id, {0: "failed"})
    producer.cancel(job_id)
    with pytest.raises(JobStateConflict, match="job is cancelling"):
        producer.retry(job_id, ["failed"])
    assert producer.status(job_id).state == "cancelled"
    settle(client, job_id, {1: "cancelled", 2: "cancelled"}, attempts=0)  # the sweep
    status = producer.retry(job_id, ["failed"])
    assert status.state == "queued" and status.counts["pending"] == 1


def test_retry_with_nothing_to_send_leaves_the_job_ended(producer: Producer) -> None:
    client = producer.redis
    job_id = job_in("completed", producer)  # every recipient accepted
    finished_at = producer.status(job_id).finished_at
    client.delete(keys.HIGH_QUEUE, keys.NORMAL_QUEUE)
    status = producer.retry(job_id, ["failed"])
    assert status.state == "completed" and status.finished_at == finished_at
    assert queued_tasks(client) == []


def test_the_last_final_outcome_completes_a_reopened_job(producer: Producer) -> None:
    client = producer.redis
    job_id = job_in("completed", producer)
    settle(client, job_id, {1: "failed"})
    producer.retry(job_id, ["failed"])
    assert settle(client, job_id, {1: "accepted"}) == "completed"
    status = producer.status(job_id)
    assert status.counts["accepted"] == 3 and status.finished_at is not None
