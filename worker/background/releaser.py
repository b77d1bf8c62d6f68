"""Scheduled jobs: kept in Redis, released by the workers themselves.

A job with a future ``schedule_at`` sits in the sorted set ``scheduled``
(score: its time). Every worker's main process runs a small thread that
claims due jobs and enqueues their plan: no extra scheduler process, no
long Celery ETA, nothing lost across worker restarts. A claim pushes the
job's score a minute ahead instead of removing it, so a worker that dies
between claim and enqueue leaves the job to be released again; the plan
task removes it once it runs (planning twice is harmless).

Parked chunks are released the same way: a chunk whose next pass is
further off than a Celery countdown may be (``Timing.max_countdown_s``; a
send window that opens tonight) is listed in ``smsbulk:parked``, scored by
when it is due, instead of coming back every countdown to find nothing to
send; the releaser enqueues its pass once due (at most ``POLL_S`` late).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import redis

from producer.core import keys, scripts
from worker.background.periodic import Periodic

POLL_S = 1.0
CLAIM_S = 60
CLAIM_BATCH = 100


def claim_due(client: redis.Redis) -> list[str]:
    """Due job ids, each claimed for CLAIM_S (claim_due.lua)."""
    due = cast(
        list[bytes],
        scripts.script("claim_due")(
            keys=[keys.SCHEDULED], args=[CLAIM_S, CLAIM_BATCH], client=client
        ),
    )
    return [job_id.decode() for job_id in due]


def mark_queued(client: redis.Redis, job_id: str) -> str | None:
    """Flip a due job from scheduled to queued (mark_queued.lua); returns the
    state it is in now."""
    state = scripts.script("mark_queued")(keys=[keys.job(job_id)], client=client)
    return None if state is None else str(cast(bytes, state).decode())


def unpark_due(client: redis.Redis) -> list[tuple[str, int]]:
    """Due parked chunks, (job id, chunk), each taken off the set (unpark_due.lua)."""
    due = cast(
        list[bytes],
        scripts.script("unpark_due")(keys=[keys.PARKED], args=[CLAIM_BATCH], client=client),
    )
    taken = []
    for member in due:
        job_id, _, chunk_no = member.decode().rpartition(":")
        taken.append((job_id, int(chunk_no)))
    return taken


class Releaser(Periodic):
    """Releases due scheduled jobs and parked chunks until stopped."""

    failure_event = "release_failed"

    def __init__(
        self,
        client: redis.Redis,
        enqueue: Callable[[str], None],
        enqueue_chunk: Callable[[str, int], None] | None = None,
    ) -> None:
        super().__init__("smsbulk-scheduler", POLL_S)
        self.client = client
        self.enqueue = enqueue
        self.enqueue_chunk = enqueue_chunk

    def release_once(self) -> int:
        released = 0
        for job_id in claim_due(self.client):
            state = mark_queued(self.client, job_id)
            if state == "queued":
                self.enqueue(job_id)
                released += 1
            elif state != "paused":
                # Cancelled, gone or already planned: nothing left to release.
                self.client.zrem(keys.SCHEDULED, job_id)
        return released

    def release_parked(self) -> int:
        if self.enqueue_chunk is None:
            return 0
        released = 0
        while True:
            due = unpark_due(self.client)
            for job_id, chunk_no in due:
                self.enqueue_chunk(job_id, chunk_no)
            released += len(due)
            if len(due) < CLAIM_BATCH:
                return released

    def step(self) -> None:
        self.release_once()
        self.release_parked()
