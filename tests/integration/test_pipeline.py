"""The whole pipeline against a real Valkey, a real worker and the sandbox."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from producer.core import keys
from tests.integration.stack import Stack, make_stack, ro_numbers
from worker.dev.launcher import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(valkey: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    url = valkey.connection_url  # type: ignore[attr-defined]
    redis.Redis.from_url(url).flushall()
    built = make_stack(url, tmp_path_factory.mktemp("pipeline"), workers=1)
    try:
        yield built
    finally:
        built.stop()


@pytest.fixture(autouse=True)
def clean_sandbox(stack: Stack) -> None:
    stack.sandbox_post("/_sandbox/reset")


def test_ten_thousand_recipients_each_sent_once_with_the_sandboxs_ids(stack: Stack) -> None:
    producer = stack.producer()
    numbers = ro_numbers(10_000)
    job_id = producer.submit(
        {
            "provider": "bulk",
            "text": "Your appointment is tomorrow at 10:00.",
            "messages": [{"to": n, "ref": f"r{i}"} for i, n in enumerate(numbers)],
        }
    )
    assert producer.status(job_id).state in ("queued", "running")
    status = stack.wait_for(job_id)
    assert status.state == "completed" and status.finished_at is not None
    assert status.counts["accepted"] == 10_000 and status.counts["pending"] == 0

    sent = stack.sandbox_get("/_sandbox/sent?kind=sendbulk")
    stats = stack.sandbox_get("/_sandbox/stats")
    assert stats["items"] == 10_000 and stats["duplicates"] == 0
    assert stats["max_items_per_request"] <= 1000
    sandbox_ids = {row["client_id"]: row["message_id"] for row in sent}
    assert sorted(row["number"] for row in sent) == sorted("4" + n for n in numbers)

    results = list(producer.results(job_id))
    assert [r.index for r in results] == list(range(10_000))
    assert all(r.status == "accepted" and r.attempts == 1 and r.segments == 1 for r in results)
    assert all(r.provider_message_id == sandbox_ids[r.index] for r in results)
    assert results[5].to == numbers[5] and results[5].e164 == "+4" + numbers[5]
    assert results[5].ref == "r5"
    producer.close()


def test_invalid_numbers_are_rejected_and_never_sent(stack: Stack) -> None:
    producer = stack.producer()
    job_id = producer.submit(
        {
            "provider": "bulk",
            "text": "hi",
            "messages": [
                {"to": "0712345678"},
                {"to": "12"},
                {"to": "not a number"},
                {"to": "0722123456", "text": "x" * 2000},
            ],
        }
    )
    stack.wait_for(job_id, 60)
    results = {r.index: r for r in producer.results(job_id)}
    assert results[0].status == "accepted"
    assert [results[i].status for i in (1, 2, 3)] == ["rejected"] * 3
    assert "12" not in (results[1].error or "")
    assert "parts" in (results[3].error or "") and results[3].segments == 14
    assert [row["number"] for row in stack.sandbox_get("/_sandbox/sent")] == ["40712345678"]
    producer.close()


def test_bad_credentials_fail_every_recipient_with_the_providers_words(stack: Stack) -> None:
    producer = stack.producer()
    job_id = producer.submit(
        {"provider": "bad", "text": "hi", "messages": [{"to": n} for n in ro_numbers(5)]}
    )
    status = stack.wait_for(job_id, 60)
    assert status.counts["failed"] == 5
    result = next(iter(producer.results(job_id)))
    assert (result.error_code, result.error, result.attempts) == ("1006", "Invalid credentials", 1)
    producer.close()


def test_celery_clients_submit_through_the_ingest_queue(stack: Stack) -> None:
    client = Celery("other-app", broker=stack.redis_url, backend=stack.redis_url)
    job = {"provider": "bulk", "text": "hi", "messages": [{"to": n} for n in ro_numbers(3)]}
    result = client.send_task(keys.SUBMIT_JOB, args=[job], queue=keys.INGEST_QUEUE, argsrepr="job")
    assert result.get(timeout=60) == {"job_id": result.id}
    assert stack.wait_for(result.id, 60).counts["accepted"] == 3

    # The same message delivered again (same task id) makes no second job and sends nothing.
    again = client.send_task(
        keys.SUBMIT_JOB, args=[job], queue=keys.INGEST_QUEUE, task_id=result.id, argsrepr="job"
    )
    assert again.get(timeout=60) == {"job_id": result.id}
    assert stack.sandbox_get("/_sandbox/stats")["items"] == 3

    named = dict(job, job_id=result.id)
    refused = client.send_task(keys.SUBMIT_JOB, args=[named], queue=keys.INGEST_QUEUE)
    assert refused.get(timeout=60) == {"error": "job exists", "job_id": result.id}
    invalid = client.send_task(
        keys.SUBMIT_JOB, args=[{"provider": "bulk"}], queue=keys.INGEST_QUEUE
    )
    answer = invalid.get(timeout=60)
    assert answer["error"] == "invalid job"
    assert {e["field"] for e in answer["errors"]} == {"messages"}
    too_big = dict(job, messages=[{"to": "0712345678"}] * 50_001)
    answer = client.send_task(keys.SUBMIT_JOB, args=[too_big], queue=keys.INGEST_QUEUE).get(60)
    assert answer["error"] == "invalid job" and "Python or HTTP" in answer["errors"][0]["msg"]
    client.close()


def test_celery_submissions_outside_the_input_limits_make_no_job(stack: Stack) -> None:
    client = Celery("other-app", broker=stack.redis_url, backend=stack.redis_url)
    job = {"provider": "bulk", "text": "hi", "messages": [{"to": n} for n in ro_numbers(3)]}
    # A task id that is not a job id: its keys would be job acc-q-evil's block 0.
    evil = client.send_task(
        keys.SUBMIT_JOB, args=[job], queue=keys.INGEST_QUEUE, task_id="acc-q-evil:m:0"
    )
    answer = evil.get(timeout=60)
    assert set(answer) == {"error"} and "task id" in answer["error"]
    # Half an emoji, as kombu's JSON carries it ("\ud83d").
    cut = dict(job, messages=[{"to": ro_numbers(1)[0], "ref": "\ud83d"}])
    answer = client.send_task(keys.SUBMIT_JOB, args=[cut], queue=keys.INGEST_QUEUE).get(60)
    assert [e["field"] for e in answer["errors"]] == ["messages[0].ref"]
    connection = stack.redis()
    assert connection.keys(f"{keys.PREFIX}:job:acc-q-evil*") == []
    listed = connection.zrange(keys.JOBS_INDEX, 0, -1)
    assert not any(job_id.startswith(b"acc-q-evil") for job_id in listed)
    connection.close()
    client.close()


def test_logs_carry_no_credential_and_no_full_phone_number(stack: Stack) -> None:
    producer = stack.producer()
    job_id = producer.submit(
        {
            "provider": "bulk",
            "text": "hi",
            "messages": [{"to": "0712345678"}, {"to": "+40 722 123 456"}],
        }
    )
    stack.wait_for(job_id, 60)
    wait_until(lambda: "provider_request" in stack.worker_logs(), 10, "the request log line")
    logs = stack.worker_logs()
    assert job_id in logs
    for secret in ("sandbox-key", "sandbox-partner"):
        assert secret not in logs
    digits = re.sub(r"[^0-9\n]", "", logs)
    for number in ("712345678", "722123456"):
        assert number not in digits.replace("\n", " ")
    producer.close()
