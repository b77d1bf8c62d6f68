"""`smsbulk api` end to end: a job submitted over HTTP is sent by a real
worker to the sandbox, and its results come back over HTTP."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from tests.integration.stack import Stack, make_stack, ro_numbers
from tests.producer.api.test_app import TOKEN, Answer, call
from worker.dev.launcher import start_api, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(valkey: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    url = valkey.connection_url  # type: ignore[attr-defined]
    redis.Redis.from_url(url).flushall()
    built = make_stack(url, tmp_path_factory.mktemp("api-e2e"), workers=1)
    try:
        yield built
    finally:
        built.stop()


@pytest.fixture(scope="module")
def api_port(stack: Stack) -> Iterator[int]:
    process, port = start_api(stack.env, stack.log_dir, TOKEN)
    try:
        yield port
    finally:
        process.stop()
    logs = process.output()
    assert TOKEN not in logs
    assert "Thank you" not in logs and "0720000000" not in logs


def get(port: int, path: str) -> Answer:
    answer = call(port, "GET", path)
    assert answer.status == 200, answer.body[:500]
    return answer


def test_submit_over_http_then_every_recipient_is_accepted(stack: Stack, api_port: int) -> None:
    stack.sandbox_post("/_sandbox/reset")
    numbers = ro_numbers(1500)
    job: dict[str, Any] = {
        "provider": "bulk",
        "text": "Thank you for your order.",
        "messages": [{"to": n, "ref": f"order-{i}"} for i, n in enumerate(numbers)],
    }
    submitted = call(api_port, "POST", "/v1/jobs", job)
    assert submitted.status == 202, submitted.body
    job_id = submitted.json()["job_id"]

    def completed() -> bool:
        state = get(api_port, f"/v1/jobs/{job_id}").json()["state"]
        assert state in ("queued", "running", "completed"), state
        return bool(state == "completed")

    wait_until(completed, 120, f"job {job_id} to complete over HTTP", interval_s=0.2)
    status = get(api_port, f"/v1/jobs/{job_id}").json()
    assert status["counts"]["accepted"] == 1500 and status["counts"]["pending"] == 0
    assert status["finished_at"] is not None

    records = [
        json.loads(line)
        for line in get(api_port, f"/v1/jobs/{job_id}/results").body.split(b"\n")
        if line
    ]
    assert [r["index"] for r in records] == list(range(1500))
    assert all(r["status"] == "accepted" and r["attempts"] == 1 for r in records)
    sent = {row["client_id"]: row["message_id"] for row in stack.sandbox_get("/_sandbox/sent")}
    assert len(sent) == 1500
    assert all(r["provider_message_id"] == sent[r["index"]] for r in records)
    assert records[42]["to"] == numbers[42] and records[42]["e164"] == "+4" + numbers[42]

    rows = list(
        csv.DictReader(
            io.StringIO(get(api_port, f"/v1/jobs/{job_id}/results?format=csv").body.decode())
        )
    )
    assert len(rows) == 1500 and {row["status"] for row in rows} == {"accepted"}
    one = get(api_port, f"/v1/jobs/{job_id}/results?ref=order-1234").body.decode().splitlines()
    assert [json.loads(line)["index"] for line in one] == [1234]

    listed = get(api_port, "/v1/jobs?limit=1").json()["jobs"]
    assert [s["job_id"] for s in listed] == [job_id] and listed[0]["state"] == "completed"

    # The console's JSON, as the real worker wrote it: every accepted
    # recipient in the timeline, no errors, the account's published limits.
    timeline = get(api_port, f"/v1/jobs/{job_id}/timeline").json()
    assert timeline and sum(point["n"] * point["s"] for point in timeline) == 1500
    assert get(api_port, f"/v1/jobs/{job_id}/errors").json() == []
    accounts = {a["account"]: a for a in get(api_port, "/v1/accounts").json()["accounts"]}
    assert accounts["bulk"]["kind"] == "sendbulk"
    assert accounts["bulk"]["limits"]["messages_per_second"] == 100000


def test_a_scheduled_job_paused_then_cancelled_over_http_never_sends(
    stack: Stack, api_port: int
) -> None:
    stack.sandbox_post("/_sandbox/reset")
    # Scheduled (at most 90 days ahead): no worker takes it before the pause.
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    job = {
        "provider": "bulk",
        "text": "Reminder",
        "schedule_at": later,
        "messages": [{"to": n} for n in ro_numbers(20)],
    }
    job_id = call(api_port, "POST", "/v1/jobs", job).json()["job_id"]
    assert get(api_port, f"/v1/jobs/{job_id}").json()["state"] == "scheduled"
    paused = call(api_port, "POST", f"/v1/jobs/{job_id}/pause")
    assert paused.status == 200 and paused.json()["state"] == "paused"
    cancelled = call(api_port, "POST", f"/v1/jobs/{job_id}/cancel")
    assert cancelled.status == 200 and cancelled.json()["state"] == "cancelled"

    def all_cancelled() -> bool:
        return bool(get(api_port, f"/v1/jobs/{job_id}").json()["counts"]["cancelled"] == 20)

    wait_until(all_cancelled, 60, "every recipient to be cancelled", interval_s=0.2)
    assert stack.sandbox_get("/_sandbox/sent") == []
    records = get(api_port, f"/v1/jobs/{job_id}/results").body.decode().splitlines()
    assert {json.loads(line)["status"] for line in records} == {"cancelled"}
