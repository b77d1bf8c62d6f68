"""Scheduled jobs: kept in Redis, released by the workers themselves.

A job with a future ``schedule_at`` sits in the sorted set ``scheduled``
(score: its time). Every worker's main process runs a small thread that
claims due jobs and enqueues their plan: no extra scheduler process, no
long Celery ETA, nothing lost across worker restarts. A claim pushes the
job's score a minute ahead instead of removing it, so a worker that dies
between claim and enqueue leaves the job to be released again; the plan
task removes it once it runs (planning twice is harmless).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import redis

from producer.core import keys
from worker.background.periodic import Periodic

POLL_S = 1.0
CLAIM_S = 60
CLAIM_BATCH = 100

# KEYS[1]: the scheduled set. ARGV: claim seconds, batch. Returns due job ids.
_CLAIM_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id) end
return due
"""

# Flip a due job from scheduled to queued; returns the state it is in now.
_MARK_QUEUED = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'scheduled' then redis.call('HSET', KEYS[1], 'state', 'queued'); return 'queued' end
return state
"""


def claim_due(client: redis.Redis) -> list[str]:
    due = cast(list[bytes], client.eval(_CLAIM_DUE, 1, keys.SCHEDULED, CLAIM_S, CLAIM_BATCH))
    return [job_id.decode() for job_id in due]


def mark_queued(client: redis.Redis, job_id: str) -> str | None:
    state = client.eval(_MARK_QUEUED, 1, keys.job(job_id))
    return None if state is None else str(cast(bytes, state).decode())


class Releaser(Periodic):
    """Releases due scheduled jobs until stopped."""

    failure_event = "release_failed"

    def __init__(self, client: redis.Redis, enqueue: Callable[[str], None]) -> None:
        super().__init__("smsbulk-scheduler", POLL_S)
        self.client = client
        self.enqueue = enqueue

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

    def step(self) -> None:
        self.release_once()
