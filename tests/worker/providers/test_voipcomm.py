"""The voipcomm adapter against provider document 004_239841fd749e911f.txt."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.worker.providers.helpers import (
    CONTEXT,
    account,
    assert_requests_partition,
    basic,
    recipient,
    send_to_local,
)
from worker.providers.base import JobContext, Recipient, Verdict
from worker.providers.voipcomm import VoipcommAdapter, delivery_date

KEY, PASSWORD = "YOUR_API_KEY", "YOUR_API_PASSWORD"
# The document's "Response data".
DOCUMENT_ANSWER = b"""{
"send_log": [
{
"code": 200,
"code_desc": "",
"from": "17134567890",
"to": "12812345678",
"country": "US",
"msg": "It is a SMS message",
"delivery_date": "2019-10-01 00:00:00",
"sale": 0.01,
"type": "BULKSMS",
"status": "SCHEDULED",
"smsid": "2017559ea27008c6b7122900621"
}
]
}"""


def make(base_url: str = "https://voip-communications.net", **table: object) -> VoipcommAdapter:
    return VoipcommAdapter(
        account("voipcomm", base_url=base_url, api_key=KEY, api_password=PASSWORD, **table)
    )


@pytest.fixture
def adapter() -> VoipcommAdapter:
    return make()


def entry(number: str, code: int = 200, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "code": code,
        "code_desc": "",
        "to": number,
        "sale": 0.01,
        "status": "SENT",
        "smsid": f"id-{number}",
    }
    base.update(fields)
    return base


def answer(*entries: dict[str, object]) -> bytes:
    return json.dumps({"send_log": list(entries)}).encode()


def test_document_curl_example_is_sent_exactly_and_its_answer_parsed() -> None:
    batch = [recipient(0, "12812345678", "It is a SMS message")]
    exchange = send_to_local(make, batch, DOCUMENT_ANSWER)
    request = exchange.request
    assert (request.method, request.path) == ("POST", "/api-v2/index.php/sms/send")
    assert request.headers["Authorization"] == basic(KEY, PASSWORD)
    assert request.content_type == "application/x-www-form-urlencoded"
    # curl --data "to=TO_NUMBER&msg=TEXT_MESSAGE": no sender, no from (the bulk route).
    assert request.body == b"to=12812345678&msg=It+is+a+SMS+message"
    (result,) = exchange.result.results
    assert (result.verdict, result.provider_message_id, result.cost, result.currency) == (
        Verdict.ACCEPTED,
        "2017559ea27008c6b7122900621",
        "0.01",
        None,  # the document names no currency; the account's applies (sending.py)
    )


def test_document_php_example_fields_from_sender_and_schedule() -> None:
    batch = [recipient(0, "12812345678", "TEXT_MESSAGE", sender="17134567890")]
    job = JobContext("job", None, "2010-01-01T13:15:00+00:00", None)
    exchange = send_to_local(make, batch, DOCUMENT_ANSWER, context=job)
    assert parse_qsl(exchange.request.body.decode(), strict_parsing=True) == [
        ("from", "17134567890"),
        ("to", "12812345678"),
        ("msg", "TEXT_MESSAGE"),
        ("delivery_date", "2010-01-01 13:15"),
    ]


@pytest.mark.parametrize(
    ("schedule_at", "expected"),
    [
        ("2030-01-02T03:04:59Z", "2030-01-02 03:04"),
        ("2030-01-02T01:30:00-02:00", "2030-01-02 03:30"),
        ("2030-01-02T03:04:05", "2030-01-02 03:04"),
    ],
)
def test_delivery_date_is_utc_to_the_minute(schedule_at: str, expected: str) -> None:
    assert delivery_date(schedule_at) == expected


def test_one_text_to_many_numbers_comma_separated_each_mapped_by_number(
    adapter: VoipcommAdapter,
) -> None:
    batch = [recipient(i, f"4072000000{i}", "Hi, 50% off & more") for i in range(3)]
    request = adapter.build_request(batch, CONTEXT)
    assert request.form == {
        "to": "40720000000,40720000001,40720000002",
        "msg": "Hi, 50% off & more",
    }
    body = answer(
        entry("40720000002", sale="0.02", smsid="c"),
        entry(
            "40720000000", 400, code_desc="Invalid destination number", status="FAILED", smsid=""
        ),
        entry("40720000001", sale=0.3, smsid="b"),
    )
    result = adapter.classify(batch, 200, None, body)
    assert [
        (r.verdict, r.provider_message_id, r.cost, r.error_code, r.error) for r in result.results
    ] == [
        (Verdict.FAILED, None, None, "400", "Invalid destination number"),
        (Verdict.ACCEPTED, "b", "0.3", None, None),
        (Verdict.ACCEPTED, "c", "0.02", None, None),
    ]


def test_a_failure_without_description_reports_its_status(adapter: VoipcommAdapter) -> None:
    body = answer(entry("40720000000", "503", status="REJECTED", code_desc=""))
    (result,) = adapter.classify([recipient(0, "40720000000")], 200, None, body).results
    assert (result.verdict, result.error_code, result.error) == (
        Verdict.FAILED,
        "503",
        "refused with status REJECTED",
    )


def test_answers_in_digits_match_numbers_we_wrote_in_another_format() -> None:
    adapter = make(number_format="00")
    batch = [recipient(0, "0012812345678", e164="+12812345678")]
    assert adapter.build_request(batch, CONTEXT).form["to"] == "0012812345678"
    (result,) = adapter.classify(batch, 200, None, DOCUMENT_ANSWER).results
    assert result.verdict is Verdict.ACCEPTED


def test_missing_unknown_and_repeated_entries_are_uncertain(adapter: VoipcommAdapter) -> None:
    batch = [recipient(i, f"4072000000{i}") for i in range(3)]
    body = answer(
        entry("40720000000"),
        entry("40720000001", smsid="x"),
        entry("40720000001", smsid="y"),
        entry("99999999999"),
        {"no": "to"},
    )
    result = adapter.classify(batch, 200, None, body)
    assert [r.verdict for r in result.results] == [
        Verdict.ACCEPTED,
        Verdict.UNCERTAIN,
        Verdict.UNCERTAIN,
    ]


@pytest.mark.parametrize("body", [b"", b"Invalid api credentials", b'{"code": 401}'])
def test_http_401_is_a_permanent_bad_credentials_failure(body: bytes) -> None:
    exchange = send_to_local(make, [recipient(0, "40720000000")], body, status=401)
    assert [(r.verdict, r.error_code, r.error) for r in exchange.result.results] == [
        (Verdict.FAILED, "401", "Invalid api credentials")
    ]
    assert exchange.result.bad_credentials and exchange.result.http_status == 401


def test_http_400_with_a_description_fails_every_recipient_with_it(
    adapter: VoipcommAdapter,
) -> None:
    body = b'{"code": 400, "code_desc": "from must be one of your numbers"}'
    batch = [recipient(0, "40720000000"), recipient(1, "40720000001")]
    result = adapter.classify(batch, 400, None, body)
    assert [(r.verdict, r.error_code, r.error) for r in result.results] == [
        (Verdict.FAILED, "400", "from must be one of your numbers")
    ] * 2
    assert not result.bad_credentials


def test_a_200_error_object_fails_every_recipient(adapter: VoipcommAdapter) -> None:
    body = b'{"code": 402, "code_desc": "Insufficient funds"}'
    result = adapter.classify([recipient(0, "40720000000")], 200, None, body)
    assert [(r.verdict, r.error_code, r.error) for r in result.results] == [
        (Verdict.FAILED, "402", "Insufficient funds")
    ]


@pytest.mark.parametrize("status", [429, 500, 503])
def test_http_status_decides_before_the_body(status: int) -> None:
    exchange = send_to_local(
        make, [recipient(0, "40720000000")], b'{"code": 401, "code_desc": "x"}', status=status
    )
    assert [r.verdict for r in exchange.result.results] == [Verdict.RETRY]
    assert not exchange.result.bad_credentials


@pytest.mark.parametrize(
    "body", [b"<html>oops</html>", b"[]", b'{"send_log": {}}', b"{}", b'{"code": 200}']
)
def test_unreadable_200_answers_are_uncertain(adapter: VoipcommAdapter, body: bytes) -> None:
    result = adapter.classify([recipient(0, "40720000000")], 200, None, body)
    assert [r.verdict for r in result.results] == [Verdict.UNCERTAIN]


def test_identical_messages_share_requests_and_a_repeated_number_is_split(
    adapter: VoipcommAdapter,
) -> None:
    batch = [
        recipient(0, "401", "a"),
        recipient(1, "402", "b"),
        recipient(2, "402", "a"),
        recipient(3, "401", "a"),
        recipient(4, "403", "a", sender="12025550123"),
        recipient(5, "403", "a"),
    ]
    groups = adapter.group(batch)
    assert [[r.index for r in g] for g in groups] == [[0, 2, 5], [1], [3], [4]]
    with pytest.raises(ValueError, match="one text"):
        adapter.build_request(batch[:2], CONTEXT)


def test_a_request_never_carries_more_than_a_burst_of_parts() -> None:
    adapter = make(messages_per_second=10, burst_s=1.0)
    batch = [recipient(i, f"4072000{i:04d}", "x" * 400, segments=3) for i in range(10)]
    groups = adapter.group(batch)
    assert [len(g) for g in groups] == [3, 3, 3, 1]


@given(
    messages=st.lists(
        st.tuples(
            st.sampled_from(["401", "402", "403", "404", "405"]),
            st.sampled_from(["a", "b"]),
            st.sampled_from([None, "12025550123"]),
            st.integers(1, 4),
        ),
        max_size=60,
    ),
    batch_size=st.integers(1, 10),
    messages_per_second=st.integers(1, 12),
)
def test_grouping_keeps_one_message_per_request_and_every_limit(
    messages: list[tuple[str, str, str | None, int]], batch_size: int, messages_per_second: int
) -> None:
    adapter = make(batch_size=batch_size, messages_per_second=messages_per_second)
    batch: list[Recipient] = [
        recipient(i, number, text, sender=sender, segments=parts)
        for i, (number, text, sender, parts) in enumerate(messages)
    ]
    groups = adapter.group(batch)
    assert_requests_partition(batch, groups, batch_size, adapter.burst_parts)
    for group in groups:
        assert len({(r.text, r.sender) for r in group}) == 1
        adapter.build_request(group, CONTEXT)  # accepted as one request
