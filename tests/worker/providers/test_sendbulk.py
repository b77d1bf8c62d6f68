"""The sendbulk adapter against provider document 002_56359e19d5e8142a.txt."""

from __future__ import annotations

import json

import pytest

from tests.worker.providers.helpers import CONTEXT, account, recipient
from worker.providers.base import Verdict
from worker.providers.sendbulk import SendbulkAdapter

CREDENTIALS = {"partner_id": "P-1", "api_key": "K-1", "shortcode": "SHORT"}


@pytest.fixture
def adapter() -> SendbulkAdapter:
    return SendbulkAdapter(account("sendbulk", **CREDENTIALS))


def test_request_is_the_documents_shape_with_each_field_once(adapter: SendbulkAdapter) -> None:
    batch = [recipient(1234, "254700000001", "message1"), recipient(1235, "254700000002", "m2")]
    request = adapter.build_request(batch, CONTEXT)
    assert request.path == "/api/services/sendbulk"
    assert adapter.url(request.path) == "https://provider.example/api/services/sendbulk"
    assert request.headers == {} and request.auth is None  # credentials ride in each item
    assert request.json == {
        "count": 2,
        "smslist": [
            {
                "partnerID": "P-1",
                "apikey": "K-1",
                "pass_type": "plain",
                "clientsmsid": 1234,
                "mobile": "254700000001",
                "message": "message1",
                "shortcode": "SHORT",
            },
            {
                "partnerID": "P-1",
                "apikey": "K-1",
                "pass_type": "plain",
                "clientsmsid": 1235,
                "mobile": "254700000002",
                "message": "m2",
                "shortcode": "SHORT",
            },
        ],
    }
    item = request.json["smslist"][0]
    assert isinstance(item["partnerID"], str) and type(item["clientsmsid"]) is int
    # Serialised once: no key appears twice in an item (the document lists pass_type twice).
    text = json.dumps(request.json)
    assert text.count('"pass_type"') == 2


def test_job_sender_replaces_the_account_shortcode(adapter: SendbulkAdapter) -> None:
    request = adapter.build_request([recipient(0, "40712345678", sender="ACME")], CONTEXT)
    assert request.json["smslist"][0]["shortcode"] == "ACME"


def test_count_equals_list_length_for_every_batch() -> None:
    adapter = SendbulkAdapter(account("sendbulk", messages_per_second=5000, **CREDENTIALS))
    batch = [recipient(i, f"4071234{i:04d}") for i in range(2500)]
    groups = adapter.group(batch)
    assert [len(g) for g in groups] == [1000, 1000, 500]
    for group in groups:
        body = adapter.build_request(group, CONTEXT).json
        assert body["count"] == len(body["smslist"]) == len(group)


def test_no_request_costs_more_than_a_burst_of_parts() -> None:
    adapter = SendbulkAdapter(
        account("sendbulk", messages_per_second=100, burst_s=2.0, **CREDENTIALS)
    )
    batch = [recipient(i, f"4071234{i:04d}", segments=3) for i in range(500)]
    groups = adapter.group(batch)
    assert all(sum(r.cost_parts for r in g) <= 200 for g in groups)
    assert sum(len(g) for g in groups) == 500


def success(items: list[tuple[int, str]]) -> bytes:
    return json.dumps(
        {
            "responses": [
                {
                    "response-code": 200,
                    "response-description": "Success",
                    "mobile": "xxxxxxxx",
                    "messageid": message_id,
                    "clientsmsid": client_id,
                    "networkid": 1,
                }
                for client_id, message_id in items
            ]
        }
    ).encode()


def test_success_maps_each_item_back_by_clientsmsid(adapter: SendbulkAdapter) -> None:
    batch = [recipient(7, "40700000001"), recipient(9, "40700000002")]
    # Answer in the other order: matching is by clientsmsid, not position.
    result = adapter.classify(batch, 200, None, success([(9, "m-9"), (7, "m-7")]))
    assert [(r.verdict, r.provider_message_id) for r in result.results] == [
        (Verdict.ACCEPTED, "m-7"),
        (Verdict.ACCEPTED, "m-9"),
    ]


def test_invalid_credentials_fail_everything_and_flag_the_account(
    adapter: SendbulkAdapter,
) -> None:
    body = b'{"response-code":1006,"response-description":"Invalid credentials"}'
    result = adapter.classify([recipient(0, "40700000001")], 200, None, body)
    assert result.bad_credentials
    assert [(r.verdict, r.error_code, r.error) for r in result.results] == [
        (Verdict.FAILED, "1006", "Invalid credentials")
    ]


def test_per_item_error_codes_are_permanent_with_the_providers_words(
    adapter: SendbulkAdapter,
) -> None:
    body = json.dumps(
        {
            "responses": [
                {"response-code": 1009, "response-description": "Invalid mobile", "clientsmsid": 0},
                {"response-code": 200, "messageid": "ok", "clientsmsid": 1},
            ]
        }
    ).encode()
    result = adapter.classify([recipient(0, "4070"), recipient(1, "40700000002")], 200, None, body)
    assert [(r.verdict, r.error_code, r.error) for r in result.results] == [
        (Verdict.FAILED, "1009", "Invalid mobile"),
        (Verdict.ACCEPTED, None, None),
    ]


def test_a_recipient_missing_from_the_answer_is_never_assumed_sent(
    adapter: SendbulkAdapter,
) -> None:
    batch = [recipient(0, "40700000001"), recipient(1, "40700000002")]
    result = adapter.classify(batch, 200, None, success([(0, "m-0")]))
    assert [r.verdict for r in result.results] == [Verdict.ACCEPTED, Verdict.UNCERTAIN]


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"[1, 2]", b'{"something": 1}', b""])
def test_unreadable_200_answers_are_uncertain(adapter: SendbulkAdapter, body: bytes) -> None:
    result = adapter.classify([recipient(0, "40700000001")], 200, None, body)
    assert [r.verdict for r in result.results] == [Verdict.UNCERTAIN]


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_throttling_and_server_errors_retry_whatever_the_body(
    adapter: SendbulkAdapter, status: int
) -> None:
    body = b'{"response-code":1006,"response-description":"Invalid credentials"}'
    result = adapter.classify([recipient(0, "40700000001")], status, 3.0, body)
    assert [r.verdict for r in result.results] == [Verdict.RETRY]
    assert result.retry_after_s == 3.0 and result.throttled is (status == 429)
    assert not result.bad_credentials


@pytest.mark.parametrize(("status", "bad_credentials"), [(401, True), (403, True), (400, False)])
def test_client_errors_are_permanent(
    adapter: SendbulkAdapter, status: int, bad_credentials: bool
) -> None:
    result = adapter.classify([recipient(0, "40700000001")], status, None, b"denied")
    assert [r.verdict for r in result.results] == [Verdict.FAILED]
    assert result.bad_credentials is bad_credentials
