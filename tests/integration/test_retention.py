"""Retention through a real Valkey, the sandbox and a real worker process:
with ``retention_days`` of two seconds, a finished job disappears from Redis
by itself, and a job still running is left alone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from producer import NoSuchJob
from producer.core import keys
from tests.integration.stack import Stack, make_stack, ro_numbers
from worker.dev.launcher import wait_until

pytestmark = pytest.mark.integration

RETENTION_S = 2.0  # the workers then sweep every second (worker/ops/timing.py)
SETTINGS = f"\n[settings]\nretention_days = {RETENTION_S / 86400!r}\n"
# One recipient a second: a job of 30 runs far longer than this test.
SLOW = {"batch_size": 1, "messages_per_second": 1}


@pytest.fixture(scope="module")
def stack(valkey: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    url = valkey.connection_url  # type: ignore[attr-defined]
    redis.Redis.from_url(url).flushall()
    built = make_stack(
        url, tmp_path_factory.mktemp("retention"), accounts={"slow": SLOW}, settings_toml=SETTINGS
    )
    try:
        yield built
    finally:
        built.stop()


def job_keys(client: redis.Redis, job_id: str) -> list[bytes]:
    return [*client.scan_iter(match=f"{keys.job(job_id)}*", count=1000)]


def test_a_finished_job_is_removed_after_retention(stack: Stack) -> None:
    producer, client = stack.producer(), stack.redis()
    try:
        done = producer.submit(
            {"provider": "bulk", "text": "hi", "messages": [{"to": n} for n in ro_numbers(5)]}
        )
        status = stack.wait_for(done, timeout_s=20)
        assert status.state == "completed" and status.counts["accepted"] == 5
        assert job_keys(client, done)
        running = producer.submit(
            {"provider": "slow", "text": "on", "messages": [{"to": n} for n in ro_numbers(30)]}
        )

        wait_until(
            lambda: not job_keys(client, done),
            RETENTION_S + 10,
            f"every key of job {done} to be removed",
            interval_s=0.2,
        )
        with pytest.raises(NoSuchJob):
            producer.status(done)
        assert all(client.zscore(name, done) is None for name in (keys.JOBS_INDEX, keys.FINISHED))
        assert [s.job_id for s in producer.jobs()] == [running]

        # The job still sending is whole: its hash, messages and outcomes so far.
        status = producer.status(running)
        assert status.state == "running"
        assert status.counts["pending"] > 0
        assert len(list(producer.results(running))) == 30
        assert "job_removed" in stack.worker_logs()
        producer.cancel(running)
    finally:
        producer.close()
        client.close()
