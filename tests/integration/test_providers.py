"""One job per provider kind through a real worker and the sandbox's strict APIs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from producer.job import Outcome
from tests.integration.stack import Stack, add_provider_accounts, make_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(valkey: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    url = valkey.connection_url  # type: ignore[attr-defined]
    redis.Redis.from_url(url).flushall()
    built = make_stack(url, tmp_path_factory.mktemp("providers"), workers=0)
    add_provider_accounts(built, ["gosms", "uspeedo"])
    built.add_worker()
    try:
        yield built
    finally:
        built.stop()


@pytest.fixture(autouse=True)
def clean_sandbox(stack: Stack) -> None:
    stack.sandbox_post("/_sandbox/reset")


def run(stack: Stack, job: dict[str, Any]) -> dict[int, Outcome]:
    producer = stack.producer()
    try:
        job_id = producer.submit(job)
        assert stack.wait_for(job_id, 60).state == "completed"
        return {outcome.index: outcome for outcome in producer.results(job_id)}
    finally:
        producer.close()


def sent_rows(stack: Stack, kind: str) -> list[dict[str, Any]]:
    return stack.sandbox_get(f"/_sandbox/sent?kind={kind}")  # type: ignore[no-any-return]


def test_gosms_batch_and_single_sends_record_ids_costs_and_reject_invalid_numbers(
    stack: Stack,
) -> None:
    started = datetime.now(UTC) - timedelta(minutes=1)  # in the past: sent at once
    outcomes = run(
        stack,
        {
            "provider": "gosms",
            "text": "Your code is 1234",
            "sender": "Shop",
            "schedule_at": started.isoformat(),
            "validity_minutes": 60,
            "messages": [
                {"to": "0712345678"},
                {"to": "+359 888 123 456"},
                {"to": "12"},
                {"to": "40722123456", "text": "x" * 200},  # two parts of 153
            ],
        },
    )
    rows = {row["number"]: row for row in sent_rows(stack, "gosms")}
    assert set(rows) == {"0712345678", "00359888123456", "0722123456"}  # "12" never sent
    assert all(row["sender"] == "Shop" for row in rows.values())
    assert outcomes[2].status == "rejected" and outcomes[2].e164 is None
    expected = {0: ("0712345678", "0.03"), 1: ("00359888123456", "0.03"), 3: ("0722123456", "0.06")}
    for index, (number, cost) in expected.items():
        outcome = outcomes[index]
        assert outcome.status == "accepted", outcome
        assert outcome.provider_message_id == rows[number]["message_id"]
        assert (outcome.cost, outcome.currency) == (cost, "EUR")
    assert outcomes[3].segments == 2 and outcomes[3].e164 == "+40722123456"

    # One recipient goes through /v1/message/send: its cost is balanceDeduction.
    stack.sandbox_post("/_sandbox/reset")
    single = run(stack, {"provider": "gosms", "text": "hi", "messages": [{"to": "0733000111"}]})
    (row,) = sent_rows(stack, "gosms")
    assert row["client_id"] is None  # the sandbox's mark of a single send
    assert (single[0].status, single[0].provider_message_id) == ("accepted", row["message_id"])
    assert (single[0].cost, single[0].currency) == ("0.03", "EUR")


def test_uspeedo_sends_templates_records_session_numbers_and_failed_target_phones(
    stack: Stack,
) -> None:
    outcomes = run(
        stack,
        {
            "provider": "uspeedo",
            "template_id": "otp_1",
            "messages": [
                {"to": "0712345678", "params": ["1234"]},
                {"to": "+690 7290", "params": ["5678"]},  # valid, but the sandbox fails it
                {"to": "12", "params": ["0000"]},
                {"to": "0712345678", "params": ["9999"]},  # the same number: another request
                {"to": "0722123456"},
            ],
        },
    )
    rows = sent_rows(stack, "uspeedo")
    by_params = {row["text"]: row for row in rows}
    assert len(rows) == 3 and all(row["sender"] == "uSpeedo" for row in rows)
    assert sorted(row["number"] for row in rows) == ["40712345678", "40712345678", "40722123456"]
    for index, text in ((0, 'otp_1 ["1234"]'), (3, 'otp_1 ["9999"]'), (4, "otp_1 []")):
        outcome = outcomes[index]
        assert outcome.status == "accepted", outcome
        assert outcome.provider_message_id == by_params[text]["message_id"]
        assert outcome.segments is None and outcome.cost is None
    assert outcomes[0].provider_message_id != outcomes[3].provider_message_id
    failed = outcomes[1]
    assert (failed.status, failed.error, failed.e164) == (
        "failed",
        "Invalid phone number",
        "+6907290",
    )
    assert outcomes[2].status == "rejected" and outcomes[2].attempts == 0
