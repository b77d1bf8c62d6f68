"""A job whose plan task was never published (the broker failed right after
the job was stored) is still sent: `Producer.submit` returns its id, and a
real worker's watchdog plans it once the job has been silent for the
visibility timeout. Every recipient is sent exactly once.

The stack is test_watchdog's: its own Valkey server, `recovery_s` 30
(visibility timeout, and so the watchdog's stall time, 20 s; it looks every
10 s); everything is stopped on the way out.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu.exceptions import OperationalError

from producer.core import keys
from tests.integration.stack import elapsed, ro_numbers
from tests.integration.test_crash_safety import submit
from tests.integration.test_watchdog import BATCH, RECOVERY_BOUND_S, own_stack

pytestmark = pytest.mark.integration


def test_a_job_whose_plan_publish_failed_is_planned_by_the_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []

    def broker_away(self: Celery, name: str, *_: Any, **__: Any) -> None:
        attempts.append(name)
        raise OperationalError("Error 111 connecting to 127.0.0.1. Connection refused.")

    # This process's publishes only: the workers are processes of their own.
    monkeypatch.setattr(Celery, "send_task", broker_away)
    total = 3 * BATCH
    with own_stack(tmp_path) as stack, stack.redis() as client:
        stack.add_worker()
        started = time.monotonic()
        job_id = submit(stack, ro_numbers(total, start=700_000), "at_most_once", "fast")
        assert attempts == [keys.PLAN_JOB]
        assert client.hget(keys.job(job_id), "state") == b"queued"
        assert client.zscore(keys.ACTIVE, job_id) is not None
        status = stack.wait_for(job_id, RECOVERY_BOUND_S)
        stats = stack.sandbox_get("/_sandbox/stats")
        print(f"\nplan never published: completed in {elapsed(started):.1f} s; {stats}")
        assert (status.state, status.counts["accepted"]) == ("completed", total)
        assert (stats["items"], stats["duplicates"]) == (total, 0)
        assert '"plan_task_requeued"' in stack.worker_logs()
