"""STOP replies over real HTTP: a real `smsbulk api` process, a worker and the
sandbox. A reply "stop" forwarded to ``POST /v1/inbound`` takes its number out
of the pending recipients of a running job (``rejected``, "opted out") and out
of every later job; ``/v1/optouts`` lists and removes it."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from producer.optouts import REASON
from tests.integration.stack import Stack, make_stack, ro_numbers
from tests.producer.api.test_app import TOKEN, Answer, call
from worker.dev.launcher import start_api, wait_until

pytestmark = pytest.mark.integration

# One request of 10 per chunk, 10 requests a second, 300 ms each: a job of
# 600 runs several seconds, its last chunks pending long after it starts.
SLOW = {"batch_size": 10, "messages_per_second": 100, "requests_per_second": 10}
TOTAL = 600


@pytest.fixture(scope="module")
def stack(valkey: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    url = valkey.connection_url  # type: ignore[attr-defined]
    redis.Redis.from_url(url).flushall()
    built = make_stack(url, tmp_path_factory.mktemp("optouts-http"), accounts={"slow": SLOW})
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
    assert TOKEN not in logs and "please" not in logs and "0729" not in logs


def ok(answer: Answer) -> Any:
    assert answer.status in (200, 202), answer.body[:500]
    return answer.json() if answer.headers.get_content_type() == "application/json" else answer


def records(port: int, job_id: str) -> list[dict[str, Any]]:
    body = ok(call(port, "GET", f"/v1/jobs/{job_id}/results")).body
    return [json.loads(line) for line in body.split(b"\n") if line]


def submit(port: int, provider: str, numbers: list[str]) -> str:
    job = {"provider": provider, "text": "Your parcel is on its way.", "messages": []}
    job["messages"] = [{"to": n} for n in numbers]
    return str(ok(call(port, "POST", "/v1/jobs", job))["job_id"])


def ended(port: int, job_id: str) -> dict[str, Any]:
    def done() -> bool:
        return bool(ok(call(port, "GET", f"/v1/jobs/{job_id}"))["state"] == "completed")

    wait_until(done, 120, f"job {job_id} to complete", interval_s=0.2)
    return dict(ok(call(port, "GET", f"/v1/jobs/{job_id}")))


def sent(stack: Stack) -> Counter[str]:
    return Counter(row["number"] for row in stack.sandbox_get("/_sandbox/sent"))


def test_a_stop_reply_takes_the_number_out_of_a_running_job_and_every_later_one(
    stack: Stack, api_port: int
) -> None:
    stack.sandbox_post("/_sandbox/reset")
    stack.sandbox_post("/_sandbox/settings", {"latency_ms": 300})
    numbers = ro_numbers(TOTAL, start=9_000_000)  # 0729000000 ...
    # Near the end of the job: still pending when the replies arrive.
    stop_national, stop_e164, stays = numbers[540], numbers[590], numbers[560]
    job_id = submit(api_port, "slow", numbers)

    def started() -> bool:
        return bool(ok(call(api_port, "GET", f"/v1/jobs/{job_id}"))["counts"]["accepted"] >= 50)

    wait_until(started, 60, "the job to be sending", interval_s=0.1)
    before = records(api_port, job_id)
    assert {before[i]["status"] for i in (540, 560, 590)} == {"pending"}

    # A national form read with `region`, an E.164 one, and a reply that is no STOP.
    replies = [
        ({"from": stop_national, "region": "RO", "text": "stop"}, True),
        ({"from": "+4" + stop_e164, "text": "STOP please"}, True),
        ({"from": "+4" + stays, "text": "Thanks, I'll stop by"}, False),
    ]
    for body, opted_out in replies:
        answer = ok(call(api_port, "POST", "/v1/inbound", body))
        assert answer["opted_out"] is opted_out and answer["from"] == "+4" + str(body["from"])[-10:]
    stopped = ["+4" + stop_national, "+4" + stop_e164]
    assert ok(call(api_port, "GET", "/v1/optouts")) == {"numbers": stopped, "count": 2}

    status = ended(api_port, job_id)
    assert status["counts"]["rejected"] == 2 and status["counts"]["accepted"] == TOTAL - 2
    after = records(api_port, job_id)
    for index in (540, 590):
        assert (after[index]["status"], after[index]["error"], after[index]["attempts"]) == (
            "rejected",
            REASON,
            0,
        )
    assert after[560]["status"] == "accepted"
    delivered = sent(stack)
    assert set(delivered.values()) == {1} and len(delivered) == TOTAL - 2
    assert not {n[1:] for n in stopped} & set(delivered)

    # Every later job: the opted-out numbers are rejected, the others sent.
    stack.sandbox_post("/_sandbox/settings", {"latency_ms": 0})
    stack.sandbox_post("/_sandbox/reset")
    later = submit(api_port, "bulk", [stop_e164, stays, stop_national, numbers[0]])
    counts = ended(api_port, later)["counts"]
    assert (counts["accepted"], counts["rejected"], counts["pending"]) == (2, 2, 0)
    assert [r["status"] for r in records(api_port, later)] == [
        "rejected",
        "accepted",
        "rejected",
        "accepted",
    ]
    assert set(sent(stack)) == {"4" + stays, "4" + numbers[0]}

    # Removed over HTTP: sent to again.
    removed = ok(call(api_port, "DELETE", f"/v1/optouts/%2B4{stop_e164}"))
    assert removed == {"e164": "+4" + stop_e164, "removed": True}
    again = submit(api_port, "bulk", [stop_e164])
    assert ended(api_port, again)["counts"]["accepted"] == 1
