"""smsbulk as a benchmark target: a job through ``producer.Producer``."""

from __future__ import annotations

import uuid
from typing import Any

from bench.scenarios import Scenario, build_job
from bench.stack import Stack
from producer import Producer

ENDED = ("completed", "cancelled")


class SmsbulkTarget:
    """Builds the job when made (its memory is the application's, not the
    producer's), submits it with ``Producer.submit`` and polls
    ``Producer.status``."""

    def __init__(self, stack: Stack, scenario: Scenario) -> None:
        self.stack = stack
        self.job_id = f"bench-{scenario.name}-{uuid.uuid4().hex[:8]}"
        self.producer = Producer(stack.redis_url, config_path=stack.config_path)
        self._job: dict[str, Any] | None = build_job(scenario, self.job_id)

    def submit(self) -> None:
        assert self._job is not None
        self.producer.submit(self._job)
        self._job = None  # the application lets go of it

    def progress(self) -> tuple[int, bool]:
        status = self.producer.status(self.job_id)
        return status.total - status.counts["pending"], status.state in ENDED

    def finished_wall_s(self) -> float | None:
        status = self.producer.status(self.job_id)
        return status.finished_at.timestamp() if status.finished_at else None

    def statuses(self) -> dict[str, int]:
        status = self.producer.status(self.job_id)
        return {str(name): count for name, count in status.counts.items()}

    def close(self) -> None:
        self.producer.close()
