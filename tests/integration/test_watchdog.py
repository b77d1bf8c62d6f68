"""The watchdog (worker/watchdog.py) with real workers: a task message that
the broker lost (a worker main process SIGKILLed between kombu's BRPOP and
its `unacked` record; simulated here by LREM of the message) is enqueued
again once its job has been silent for the visibility timeout, and the job
completes with every recipient sent once.

`recovery_s` is 30 (tests/integration/test_crash_safety.py): visibility
timeout, and so the watchdog's stall time, 20 s; it looks every 10 s.
Every test has its own Valkey server and stops everything it started.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from producer import keys
from tests.integration.stack import Stack, elapsed, make_stack, ro_numbers
from tests.integration.test_crash_safety import SETTINGS, submit
from worker.launcher import start_valkey, wait_until
from worker.watchdog import parse_task

pytestmark = pytest.mark.integration

RECOVERY_BOUND_S = 60  # stall 20 s + a sweep 10 s + the job's own time, with room
CHUNKS = 10
BATCH = 20
LATENCY_MS = 400
FAST = {"batch_size": BATCH, "messages_per_second": 1e5, "requests_per_second": 1e4}


def lose_one(client: redis.Redis, task: str, queue: str = keys.NORMAL_QUEUE) -> tuple[str, int]:
    """Remove one waiting `task` message from the queue; returns its job id
    and chunk (send_chunk) or first chunk (plan_job)."""

    lost: list[tuple[str, int]] = []

    def removed() -> bool:
        for raw in client.lrange(queue, 0, -1):
            parsed = parse_task(raw)
            if parsed and parsed[0] == task and client.lrem(queue, 1, raw) == 1:
                lost.append(parsed[1:])
                return True
        return False  # none waiting, or a worker took it first

    wait_until(removed, 15, f"a {task} message to remove")
    return lost[0]


def send_chunks_waiting(client: redis.Redis) -> int:
    return sum(
        1
        for raw in client.lrange(keys.NORMAL_QUEUE, 0, -1)
        if (parsed := parse_task(raw)) and parsed[0] == keys.SEND_CHUNK
    )


@contextmanager
def own_stack(tmp_path: Path, latency_ms: int = 0) -> Iterator[Stack]:
    """A stack on its own Valkey server, with the account `fast` and no
    worker yet; everything stopped on the way out."""
    valkey = start_valkey()
    try:
        stack = make_stack(
            valkey.connection_url,
            tmp_path / "stack",
            workers=0,
            sandbox_args=("--latency-ms", str(latency_ms)),
            accounts={"fast": FAST},
            settings_toml=SETTINGS,
        )
        try:
            yield stack
        finally:
            stack.stop()
    finally:
        valkey.stop()


def test_a_lost_chunk_task_is_enqueued_again(tmp_path: Path) -> None:
    with own_stack(tmp_path, LATENCY_MS) as stack, stack.redis() as client:
        stack.add_worker(concurrency=1)  # one chunk at a time: the rest wait queued
        numbers = ro_numbers(CHUNKS * BATCH, start=500_000)
        started = time.monotonic()
        job_id = submit(stack, numbers, "at_least_once", "fast")
        wait_until(lambda: send_chunks_waiting(client) >= CHUNKS // 2, 30, "chunks queued")
        lost_job, lost_chunk = lose_one(client, keys.SEND_CHUNK)
        assert lost_job == job_id
        status = stack.wait_for(job_id, RECOVERY_BOUND_S)
        stats = stack.sandbox_get("/_sandbox/stats")
        print(f"\nchunk {lost_chunk} lost: completed in {elapsed(started):.1f} s; {stats}")
        assert status.state == "completed"
        assert status.counts["accepted"] == CHUNKS * BATCH
        assert stats["items"] == CHUNKS * BATCH and stats["duplicates"] == 0
        requeued = [
            json.loads(line)
            for line in stack.worker_logs().splitlines()
            if '"chunk_tasks_requeued"' in line
        ]
        assert [(e["job_id"], e["chunks"]) for e in requeued] == [(job_id, 1)]
        assert client.zscore(keys.ACTIVE, job_id) is None


def test_a_lost_plan_task_is_enqueued_again(tmp_path: Path) -> None:
    with own_stack(tmp_path) as stack, stack.redis() as client:
        started = time.monotonic()
        job_id = submit(stack, ro_numbers(3 * BATCH, start=600_000), "at_most_once", "fast")
        assert lose_one(client, keys.PLAN_JOB) == (job_id, 0)
        stack.add_worker()
        status = stack.wait_for(job_id, RECOVERY_BOUND_S)
        stats = stack.sandbox_get("/_sandbox/stats")
        print(f"\nplan lost: completed in {elapsed(started):.1f} s; {stats}")
        assert status.state == "completed"
        assert status.counts["accepted"] == 3 * BATCH
        assert stats["items"] == 3 * BATCH and stats["duplicates"] == 0
        assert '"plan_task_requeued"' in stack.worker_logs()
