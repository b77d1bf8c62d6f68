"""The gosms adapter against documents 001_19c148331afa61d2 (single) and 000_61a675938e9f086e."""

from __future__ import annotations

import json

import pytest

from producer.core.store import StoredMessage
from producer.errors import ConfigError
from tests.worker.providers.helpers import CONTEXT, account, recipient, send_to_local
from worker.pipeline.recipients import prepare
from worker.providers.base import JobContext, Verdict
from worker.providers.gosms import GosmsAdapter, schedule_datetime

KEY = "gosms-key-1"

# Document 000, "Code Samples" and "Response".
BATCH_REQUEST = {
    "messages": [
        {"recipient": "0712345678", "message": "This is a test message."},
        {"recipient": "0712345678", "message": "This is another test message."},
    ]
}
BATCH_ANSWER = b"""{
"success": true,
"message": "Message orders registered.",
"balanceDeduction": "0.06",
"currency": "EUR",
"orderSummary": [
{"arrayPosition": 0, "amount": 0.03, "recipient": "0712345678",
 "messageId": "63ff4994-28d0-49c8-ac89-6ad5312525e5"},
{"arrayPosition": 1, "amount": 0.03, "recipient": "0712345678",
 "messageId": "f2381e75-7fcb-4ace-a1c1-1afc0a101b95"}
]
}"""
# Document 001.
SINGLE_ANSWER = b"""{
  "success": true,
  "messageId": "dea3535d-2b1e-4c05-b3ea-6879c8d2516c",
  "balanceDeduction": "0.03",
  "currency": "EUR"
}"""


def make(base_url: str = "https://api.gosms.ro", **table: object) -> GosmsAdapter:
    return GosmsAdapter(account("gosms", base_url=base_url, api_key=KEY, **table))


@pytest.fixture
def adapter() -> GosmsAdapter:
    return make()


def two() -> list:  # type: ignore[type-arg]
    return [
        recipient(0, "0712345678", "This is a test message."),
        recipient(1, "0712345678", "This is another test message."),
    ]


def test_document_batch_example_is_sent_exactly_and_its_answer_mapped_by_position() -> None:
    exchange = send_to_local(make, two(), BATCH_ANSWER)
    request = exchange.request
    assert (request.method, request.path) == ("POST", "/v1/message/send-batch")
    assert request.headers["X-Authorization"] == KEY
    assert request.content_type == "application/json"
    assert "Authorization" not in request.headers
    assert json.loads(request.body) == BATCH_REQUEST
    assert [
        (r.verdict, r.provider_message_id, r.cost, r.currency) for r in exchange.result.results
    ] == [
        (Verdict.ACCEPTED, "63ff4994-28d0-49c8-ac89-6ad5312525e5", "0.03", "EUR"),
        (Verdict.ACCEPTED, "f2381e75-7fcb-4ace-a1c1-1afc0a101b95", "0.03", "EUR"),
    ]
    assert exchange.result.http_status == 200


def test_document_single_example_uses_message_send_and_balance_deduction() -> None:
    batch = [recipient(0, "0712345678", "This is a test message.")]
    exchange = send_to_local(make, batch, SINGLE_ANSWER)
    request = exchange.request
    assert (request.method, request.path) == ("POST", "/v1/message/send")
    assert request.headers["X-Authorization"] == KEY
    assert request.content_type == "application/json"
    assert json.loads(request.body) == {
        "recipient": "0712345678",
        "message": "This is a test message.",
    }
    (result,) = exchange.result.results
    assert (result.verdict, result.provider_message_id, result.cost, result.currency) == (
        Verdict.ACCEPTED,
        "dea3535d-2b1e-4c05-b3ea-6879c8d2516c",
        "0.03",
        "EUR",
    )


def test_the_same_number_twice_in_one_batch_is_fine_matching_is_by_position(
    adapter: GosmsAdapter,
) -> None:
    assert adapter.group(two()) == [two()]


def test_sender_schedule_and_validity_are_passed_in_the_documented_forms(
    adapter: GosmsAdapter,
) -> None:
    job = JobContext("j", None, "2030-01-02T05:04:05.678901+02:00", 90)
    batch = [recipient(0, "0712345678", "a", sender="Shop"), recipient(1, "00359888123456", "b")]
    messages = adapter.build_request(batch, job).json["messages"]
    assert messages == [
        {
            "recipient": "0712345678",
            "message": "a",
            "sender": "Shop",
            "scheduleDatetime": "2030-01-02T03:04:05.678Z",
            "validity": 90,
        },
        {
            "recipient": "00359888123456",
            "message": "b",
            "scheduleDatetime": "2030-01-02T03:04:05.678Z",
            "validity": 90,
        },
    ]


def test_without_schedule_validity_counts_from_the_jobs_creation(adapter: GosmsAdapter) -> None:
    created = "2030-01-02T03:04:05+00:00"
    with_validity = JobContext("j", None, None, 30, created_at=created)
    # One recipient goes to /v1/message/send: the body is the message itself.
    message = adapter.build_request([recipient(0, "0712345678")], with_validity).json
    assert message["scheduleDatetime"] == "2030-01-02T03:04:05.000Z"
    assert message["validity"] == 30
    without = JobContext("j", None, None, None, created_at=created)
    assert (
        "scheduleDatetime" not in adapter.build_request([recipient(0, "0712345678")], without).json
    )


@pytest.mark.parametrize(
    ("schedule_at", "expected"),
    [
        ("2030-01-02T03:04:05Z", "2030-01-02T03:04:05.000Z"),
        ("2030-06-30T23:59:59.999999-05:00", "2030-07-01T04:59:59.999Z"),
        ("2030-01-02T03:04:05", "2030-01-02T03:04:05.000Z"),
    ],
)
def test_schedule_datetime_is_utc_with_milliseconds(schedule_at: str, expected: str) -> None:
    assert schedule_datetime(schedule_at) == expected


def test_numbers_are_national_at_home_and_00_abroad_and_long_texts_rejected(
    adapter: GosmsAdapter,
) -> None:
    messages = [
        (0, StoredMessage("+40 712 345 678")),
        (1, StoredMessage("+359 888 123 456")),
        (2, StoredMessage("0712345678", "x" * 39_016)),
        (3, StoredMessage("0712345678", "x" * 39_015)),
    ]
    recipients, rejections = prepare(adapter, messages, "hi", None)
    assert [(r.index, r.address, r.e164) for r in recipients] == [
        (0, "0712345678", "+40712345678"),
        (1, "00359888123456", "+359888123456"),
        (3, "0712345678", "+40712345678"),
    ]
    assert recipients[2].segments == 255
    assert [(r.index, r.reason) for r in rejections] == [
        (2, "text too long: over 39015 characters")
    ]


def test_batch_size_defaults_to_100_and_is_refused_above_1000() -> None:
    assert make().account.batch_size == 100
    assert make(batch_size=1000).account.batch_size == 1000
    with pytest.raises(ConfigError, match="batch_size"):
        make(batch_size=1001)


@pytest.mark.parametrize(
    ("amounts", "costs"),
    [
        ([b"0.07", b"0.3"], ["0.07", "0.3"]),
        ([b"0.1", b"1e-2"], ["0.1", "0.01"]),
        ([b"0", b'"0.45"'], ["0", "0.45"]),
        ([b"null", b'"free"'], [None, None]),
    ],
)
def test_amounts_are_exact_decimal_strings(
    adapter: GosmsAdapter, amounts: list[bytes], costs: list[str | None]
) -> None:
    items = b",".join(
        b'{"arrayPosition": %d, "amount": %s, "messageId": "m%d"}' % (i, a, i)
        for i, a in enumerate(amounts)
    )
    body = b'{"success": true, "currency": "RON", "orderSummary": [' + items + b"]}"
    result = adapter.classify(two(), 200, None, body)
    assert [r.cost for r in result.results] == costs
    assert all(r.verdict is Verdict.ACCEPTED and r.currency == "RON" for r in result.results)


def test_fewer_items_than_sent_leave_the_rest_uncertain(adapter: GosmsAdapter) -> None:
    body = json.dumps(
        {
            "success": True,
            "currency": "EUR",
            "orderSummary": [
                {"arrayPosition": 1, "amount": 0.03, "messageId": "m1"},
                {"arrayPosition": 7, "amount": 0.03, "messageId": "not ours"},
                {"arrayPosition": "0", "amount": 0.03, "messageId": "not an int"},
            ],
        }
    ).encode()
    result = adapter.classify(two(), 200, None, body)
    assert [(r.verdict, r.provider_message_id) for r in result.results] == [
        (Verdict.UNCERTAIN, None),
        (Verdict.ACCEPTED, "m1"),
    ]


def test_a_position_answered_twice_is_uncertain(adapter: GosmsAdapter) -> None:
    body = json.dumps(
        {
            "success": True,
            "orderSummary": [
                {"arrayPosition": 0, "messageId": "a"},
                {"arrayPosition": 0, "messageId": "b"},
                {"arrayPosition": 1, "messageId": "c"},
            ],
        }
    ).encode()
    result = adapter.classify(two(), 200, None, body)
    assert [r.verdict for r in result.results] == [Verdict.UNCERTAIN, Verdict.ACCEPTED]


@pytest.mark.parametrize("size", [1, 2])
def test_success_false_fails_every_recipient_with_the_providers_message(
    adapter: GosmsAdapter, size: int
) -> None:
    body = b'{"success": false, "message": "Insufficient balance"}'
    result = adapter.classify(two()[:size], 200, None, body)
    assert [(r.verdict, r.error_code, r.error) for r in result.results] == [
        (Verdict.FAILED, "200", "Insufficient balance")
    ] * size
    assert not result.bad_credentials


def test_http_401_is_bad_credentials_in_the_providers_words() -> None:
    exchange = send_to_local(
        make, two(), b'{"success": false, "message": "Invalid API key"}', status=401
    )
    assert [(r.verdict, r.error_code, r.error) for r in exchange.result.results] == [
        (Verdict.FAILED, "401", "Invalid API key")
    ] * 2
    assert exchange.result.bad_credentials and exchange.result.http_status == 401


def test_http_400_names_the_problem(adapter: GosmsAdapter) -> None:
    body = b'{"success": false, "message": "messages[1].recipient must be 07XXXXXXXX"}'
    result = adapter.classify(two(), 400, None, body)
    assert {(r.verdict, r.error_code, r.error) for r in result.results} == {
        (Verdict.FAILED, "400", "messages[1].recipient must be 07XXXXXXXX")
    }
    assert not result.bad_credentials


@pytest.mark.parametrize(("status", "body"), [(401, b"Unauthorized"), (404, b'{"error": "x"}')])
def test_client_errors_without_a_gosms_body_are_still_permanent(
    adapter: GosmsAdapter, status: int, body: bytes
) -> None:
    result = adapter.classify(two(), status, None, body)
    assert {r.verdict for r in result.results} == {Verdict.FAILED}
    assert result.bad_credentials is (status == 401)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_throttling_and_server_errors_retry_whatever_the_body(status: int) -> None:
    exchange = send_to_local(
        make,
        two(),
        b'{"success": false, "message": "Invalid API key"}',
        status=status,
        headers={"Retry-After": "7"},
    )
    assert [r.verdict for r in exchange.result.results] == [Verdict.RETRY] * 2
    assert exchange.result.retry_after_s == 7.0
    assert exchange.result.throttled is (status == 429)
    assert not exchange.result.bad_credentials


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502 Bad Gateway</html>",
        b"",
        b"[]",
        b'{"message": "ok"}',
        b'{"success": true, "orderSummary": {}}',
        b'{"success": "yes"}',
    ],
)
def test_unreadable_200_answers_are_uncertain(adapter: GosmsAdapter, body: bytes) -> None:
    result = adapter.classify(two(), 200, None, body)
    assert [r.verdict for r in result.results] == [Verdict.UNCERTAIN] * 2


def test_a_single_send_without_message_id_is_still_accepted(adapter: GosmsAdapter) -> None:
    result = adapter.classify(two()[:1], 200, None, b'{"success": true}')
    assert [(r.verdict, r.provider_message_id, r.cost) for r in result.results] == [
        (Verdict.ACCEPTED, None, None)
    ]


def test_unscheduled_jobs_send_only_the_documented_required_fields(
    adapter: GosmsAdapter,
) -> None:
    body = adapter.build_request(two()[:1], CONTEXT).json
    assert body == {"recipient": "0712345678", "message": "This is a test message."}
