"""A job stored whose plan task could not be published (the broker went away
between the two steps): the submission still answers the job's id (Python,
the command line, 202 over HTTP) and logs a warning, because the job exists
and the workers' watchdog plans it (tests/integration/test_publish_failure.py).
An error there would invite the client to submit again: a second job, every
recipient sent twice."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu.exceptions import OperationalError

from producer import JobExists, Producer
from producer.core import keys
from tests.producer.api.test_app import ApiServer, api  # noqa: F401 - the fixture
from worker.cli import main

PRODUCER_LOGGER = "smsbulk.producer"


def job(**fields: Any) -> dict[str, Any]:
    messages = [{"to": f"07{20000000 + i}"} for i in range(3)]
    return {"provider": "bulk", "text": "Your code is 1234", "messages": messages, **fields}


@pytest.fixture
def publish_fails(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Celery publish raises as kombu does when the broker is away;
    returns the ids of the jobs whose plan was attempted."""
    attempted: list[str] = []

    def send_task(self: Celery, name: str, args: list[Any] | None = None, **_: Any) -> None:
        attempted.append(str((args or [""])[0]))
        raise OperationalError("Error 111 connecting to redis:6379. Connection refused.")

    monkeypatch.setattr(Celery, "send_task", send_task)
    return attempted


def assert_stored_and_watched(client: redis.Redis, job_id: str, total: int) -> None:
    stored = client.hgetall(keys.job(job_id))
    assert stored[b"state"] == b"queued" and int(stored[b"total"]) == total
    assert client.zscore(keys.ACTIVE, job_id) is not None  # the watchdog will plan it
    assert client.llen(keys.NORMAL_QUEUE) == 0  # no plan task went out


def warned(caplog: pytest.LogCaptureFixture, job_id: str) -> bool:
    return any(
        r.name == PRODUCER_LOGGER
        and r.levelno == logging.WARNING
        and job_id in r.getMessage()
        and "OperationalError" in r.getMessage()
        and "watchdog" in r.getMessage()
        for r in caplog.records
    )


def test_submit_returns_the_id_of_a_stored_job_whose_plan_was_not_published(
    producer: Producer,
    redis_client: redis.Redis,
    publish_fails: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger=PRODUCER_LOGGER):
        job_id = producer.submit(job())
    assert publish_fails == [job_id]
    assert_stored_and_watched(redis_client, job_id, 3)
    assert producer.status(job_id).state == "queued"
    assert warned(caplog, job_id)


def test_resubmitting_a_job_id_after_a_publish_failure_is_refused_not_doubled(
    producer: Producer, redis_client: redis.Redis, publish_fails: list[str]
) -> None:
    assert producer.submit(job(job_id="once-only")) == "once-only"
    with pytest.raises(JobExists):
        producer.submit(job(job_id="once-only"))
    assert redis_client.zcard(keys.JOBS_INDEX) == 1


def test_smsbulk_submit_prints_the_job_id_and_exits_0_when_the_publish_fails(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    config_file: Path,
    publish_fails: list[str],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job()))
    with caplog.at_level(logging.WARNING, logger=PRODUCER_LOGGER):
        assert main(["--redis-url", redis_url, "submit", str(path)]) == 0
    (job_id,) = publish_fails
    assert capsys.readouterr().out == f"{job_id}\n"
    assert_stored_and_watched(redis_client, job_id, 3)
    assert warned(caplog, job_id)


def test_http_submit_is_202_with_the_job_id_when_the_publish_fails(
    api: ApiServer,  # noqa: F811 - the fixture imported from test_api
    redis_client: redis.Redis,
    publish_fails: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger=PRODUCER_LOGGER):
        answer = api("POST", "/v1/jobs", job())
    assert answer.status == 202, answer.body
    job_id = answer.json()["job_id"]
    assert publish_fails == [job_id]
    assert answer.headers["Location"] == f"/v1/jobs/{job_id}"
    assert_stored_and_watched(redis_client, job_id, 3)
    assert api("GET", f"/v1/jobs/{job_id}").json()["state"] == "queued"
    assert warned(caplog, job_id)


def test_the_celery_submit_task_answers_the_stored_jobs_id_when_its_plan_publish_fails(
    redis_client: redis.Redis,
    config_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    publish_fails: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.producer.test_submission import submit_task
    from worker import tasks

    monkeypatch.setattr(tasks, "_redis", redis_client)
    with caplog.at_level(logging.WARNING, logger=PRODUCER_LOGGER):
        answer = submit_task(job(), "task-publish-fails")
    assert answer == {"job_id": "task-publish-fails"}
    assert publish_fails == ["task-publish-fails"]
    assert_stored_and_watched(redis_client, "task-publish-fails", 3)
    assert warned(caplog, "task-publish-fails")
