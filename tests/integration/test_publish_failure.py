"""A job whose plan task was never published (the broker failed right after
the job was stored) is still sent: `Producer.submit` returns its id, and a
real worker's watchdog plans it once the job has been silent for the
visibility timeout. Every recipient is sent exactly once.

`recovery_s` is 30: visibility timeout, and so the watchdog's stall time,
20 s; it looks every 10 s. The test has its own Valkey server and stops
everything it started.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kombu.exceptions import OperationalError

from producer import keys
from tests.integration.stack import elapsed, make_stack, ro_numbers
from worker.launcher import start_valkey

pytestmark = pytest.mark.integration

RECOVERY_S = 30
BOUND_S = 90  # stall 20 s + a sweep 10 s + the job's own time, with room for a loaded machine
BATCH = 20
CHUNKS = 3
FAST = {"batch_size": BATCH, "messages_per_second": 1e5, "requests_per_second": 1e4}


def test_a_job_whose_plan_publish_failed_is_planned_by_the_watchdog(tmp_path: Path) -> None:
    valkey = start_valkey()
    try:
        stack = make_stack(
            valkey.connection_url,
            tmp_path / "stack",
            workers=1,
            accounts={"fast": FAST},
            settings_toml=f"\n[settings]\nrecovery_s = {RECOVERY_S}\n",
        )
        try:
            producer = stack.producer()
            attempts: list[str] = []

            def broker_away(name: str, args: list[Any] | None = None, **_: Any) -> None:
                attempts.append(name)
                raise OperationalError("Error 111 connecting to 127.0.0.1. Connection refused.")

            producer.celery.send_task = broker_away
            numbers = ro_numbers(CHUNKS * BATCH, start=700_000)
            started = time.monotonic()
            job_id = producer.submit(
                {"provider": "fast", "text": "Your code is 1234",
                 "messages": [{"to": n} for n in numbers]}
            )  # fmt: skip
            producer.close()
            assert attempts == [keys.PLAN_JOB]
            with stack.redis() as client:
                assert client.hget(keys.job(job_id), "state") == b"queued"
                assert client.zscore(keys.ACTIVE, job_id) is not None
            status = stack.wait_for(job_id, BOUND_S)
            stats = stack.sandbox_get("/_sandbox/stats")
            print(f"\nplan never published: completed in {elapsed(started):.1f} s; {stats}")
            assert status.state == "completed"
            assert status.counts["accepted"] == CHUNKS * BATCH
            assert stats["items"] == CHUNKS * BATCH and stats["duplicates"] == 0
            assert '"plan_task_requeued"' in stack.worker_logs()
        finally:
            stack.stop()
    finally:
        valkey.stop()
