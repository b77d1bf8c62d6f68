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
    add_provider_accounts(built)
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
    stats = stack.sandbox_get("/_sandbox/stats")
    assert (stats["errors"], stats["notices"]) == (0, 0)  # scheduleDatetime read, not ignored

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


def test_voipcomm_sends_one_text_to_many_numbers_and_maps_the_send_log_by_number(
    stack: Stack,
) -> None:
    text = "Your order has shipped"
    outcomes = run(
        stack,
        {
            "provider": "voipcomm",
            "text": text,
            "schedule_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
            "messages": [
                {"to": "0712345678"},
                {"to": "0722123456"},
                {"to": "0712345678"},  # the same number again: another request
                {"to": "+690 7290"},  # valid, but the sandbox's send_log refuses it
                {"to": "12"},
                {"to": "0733000111", "text": "x" * 161},  # its own text: its own request
            ],
        },
    )
    rows = sent_rows(stack, "voipcomm")
    assert all(row["sender"] is None for row in rows)  # no from: the bulk route
    ids: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        ids.setdefault((row["number"], row["text"]), set()).add(row["message_id"])
    assert {key: len(found) for key, found in ids.items()} == {
        ("40712345678", text): 2,
        ("40722123456", text): 1,
        ("40733000111", "x" * 161): 1,
    }
    assert {outcomes[0].provider_message_id, outcomes[2].provider_message_id} == ids[
        ("40712345678", text)
    ]
    assert {outcomes[1].provider_message_id} == ids[("40722123456", text)]
    assert {outcomes[5].provider_message_id} == ids[("40733000111", "x" * 161)]
    for index, cost in ((0, "0.01"), (1, "0.01"), (2, "0.01"), (5, "0.02")):
        outcome = outcomes[index]
        assert outcome.status == "accepted", outcome
        assert (outcome.cost, outcome.currency) == (cost, "USD")  # currency: the account's
    failed = outcomes[3]
    assert (failed.status, failed.error_code, failed.error) == (
        "failed",
        "400",
        "Invalid destination number",
    )
    assert outcomes[4].status == "rejected"
