"""The watchdog (worker/background/watchdog.py) with real workers: a task message that
the broker lost (a worker main process SIGKILLed between kombu's BRPOP and
its `unacked` record) is enqueued again and the job completes with every
recipient sent once:

- with no worker dead (the message removed by LREM), once its job has been
  silent for the visibility timeout: `recovery_s` 30
  (tests/integration/test_crash_safety.py), stall time 20 s, a look every 10 s;
- with the worker that popped it SIGKILLed while its job keeps committing,
  within `recovery_s` (20 here) of the kill: its heartbeat stops, and the
  watchdog that finds it dead looks at every job at once.

Every test has its own Valkey server and stops everything it started.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from producer.core import keys
from tests.integration.stack import Stack, elapsed, make_stack, ro_numbers
from tests.integration.test_crash_safety import SETTINGS, sandbox_number, sent_per_number, submit
from worker.background.watchdog import parse_task
from worker.dev.launcher import start_valkey, wait_until

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
def own_stack(
    tmp_path: Path, latency_ms: int = 0, settings_toml: str = SETTINGS
) -> Iterator[Stack]:
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
            settings_toml=settings_toml,
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


# --- a worker killed right after popping a task ------------------------------------

KILL_RECOVERY_S = 20  # visibility timeout 10 s
KILL_CHUNKS = 70
KILL_LATENCY_MS = 1000


def first_sent_s(stack: Stack, numbers: set[str]) -> dict[str, float]:
    """When the sandbox first took each of ``numbers`` (epoch s)."""
    first: dict[str, float] = {}
    for row in stack.sandbox_get("/_sandbox/sent?kind=sendbulk"):
        if row["number"] in numbers:
            first[row["number"]] = min(first.get(row["number"], row["t"]), row["t"])
    return first


def test_a_task_popped_by_a_worker_killed_at_once_is_sent_within_recovery_s(
    tmp_path: Path,
) -> None:
    """The victim pops a chunk message and dies before kombu records it as
    unacknowledged (simulated: the victim is SIGKILLed, then the next message
    is popped as it would have been). The other worker keeps committing other
    chunks for longer than `recovery_s`, so the job is never silent; the
    lost chunk must still be sent within `recovery_s` of the kill."""
    settings = f"\n[settings]\nrecovery_s = {KILL_RECOVERY_S}\n"
    with own_stack(tmp_path, KILL_LATENCY_MS, settings) as stack, stack.redis() as client:
        victim = stack.add_worker(concurrency=1)
        stack.add_worker(concurrency=2)
        numbers = ro_numbers(KILL_CHUNKS * BATCH, start=700_000)
        job_id = submit(stack, numbers, "at_least_once", "fast")

        def sending() -> bool:
            for worker in stack.workers:
                assert worker.alive(), f"{worker.name} died:\n{worker.output()[-3000:]}"
            return bool(stack.sandbox_get("/_sandbox/stats")["items"] >= 3 * BATCH)

        wait_until(sending, 60, "the first sends", interval_s=0.2)
        wait_until(lambda: send_chunks_waiting(client) >= CHUNKS, 30, "chunks queued")
        victim.kill_group(signal.SIGKILL)
        killed_at = time.time()
        stack.workers.remove(victim)  # dead: wait_for checks the living
        victim.stop()
        # The message the victim had just popped: the oldest one, BRPOP's.
        raw = client.rpop(keys.NORMAL_QUEUE)
        parsed = parse_task(raw)
        assert parsed is not None and parsed[:2] == (keys.SEND_CHUNK, job_id)
        lost_chunk = parsed[2]
        lost = {sandbox_number(n) for n in numbers[lost_chunk * BATCH : (lost_chunk + 1) * BATCH]}

        def lost_chunk_sent() -> bool:
            return len(first_sent_s(stack, lost)) == len(lost)

        wait_until(lost_chunk_sent, 3 * KILL_RECOVERY_S, "the lost chunk", interval_s=0.5)
        sent_after_s = max(first_sent_s(stack, lost).values()) - killed_at
        status = stack.wait_for(job_id, 120)
        counts, _ = sent_per_number(stack)
        last_s = max(row["t"] for row in stack.sandbox_get("/_sandbox/sent?kind=sendbulk"))
        print(
            f"\nchunk {lost_chunk} lost at the kill: sent {sent_after_s:.1f} s after it; "
            f"job completed {last_s - killed_at:.1f} s after it"
        )
        assert sent_after_s <= KILL_RECOVERY_S
        assert last_s - killed_at > KILL_RECOVERY_S  # the job was never silent meanwhile
        assert status.state == "completed"
        assert status.counts["accepted"] == len(numbers)
        assert set(counts) == {sandbox_number(n) for n in numbers}
        assert all(counts[number] == 1 for number in lost)
