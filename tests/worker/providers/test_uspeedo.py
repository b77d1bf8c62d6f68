"""The uspeedo adapter against provider document 003_052261f1e3ba1040.txt."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.core.store import StoredMessage
from tests.worker.providers.helpers import (
    account,
    assert_requests_partition,
    basic,
    recipient,
    send_to_local,
)
from worker.pipeline.recipients import prepare
from worker.providers.base import JobContext, Recipient, Verdict
from worker.providers.uspeedo import UspeedoAdapter

KEY_ID, SECRET = "ACCESSKEY_ID", "ACCESSKEY_SECRET"
JOB = JobContext("job", "template_id_1", None, None)
# The document's curl example.
EXAMPLE_REQUEST = {
    "TaskContent": [
        {
            "TemplateId": "template_id_1",
            "SenderId": "uSpeedo",
            "Target": [{"Phone": "13800138000", "TemplateParams": ["123456"]}],
        }
    ]
}
# The document's "Success Response": two SessionNo, so two TaskContent elements.
EXAMPLE_ANSWER = b"""{
"RetCode": 0,
"Message": "success",
"SessionNo": ["session_no_1", "session_no_2"],
"FailedTargetPhones": []
}"""


def make(base_url: str = "https://api.uspeedo.com", **table: object) -> UspeedoAdapter:
    return UspeedoAdapter(
        account(
            "uspeedo", base_url=base_url, access_key_id=KEY_ID, access_key_secret=SECRET, **table
        )
    )


def target(index: int, phone: str, sender: str = "uSpeedo", params: list[str] | None = None):  # type: ignore[no-untyped-def]
    return recipient(index, phone, None, sender=sender, params=params, segments=None)


@pytest.fixture
def adapter() -> UspeedoAdapter:
    return make()


def test_document_example_is_sent_exactly_with_basic_auth() -> None:
    answer = b'{"RetCode": 0, "Message": "success", "SessionNo": ["s-1"], "FailedTargetPhones": []}'
    exchange = send_to_local(
        make, [target(0, "13800138000", params=["123456"])], answer, context=JOB
    )
    request = exchange.request
    assert (request.method, request.path) == ("POST", "/api/v1/usms/SendBatchUSMSMessage")
    # echo -n 'ACCESSKEY_ID:ACCESSKEY_SECRET' | base64
    assert request.headers["Authorization"] == "Basic QUNDRVNTS0VZX0lEOkFDQ0VTU0tFWV9TRUNSRVQ="
    assert request.headers["Authorization"] == basic(KEY_ID, SECRET)
    assert request.content_type == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert json.loads(request.body) == EXAMPLE_REQUEST
    assert [(r.verdict, r.provider_message_id) for r in exchange.result.results] == [
        (Verdict.ACCEPTED, "s-1")
    ]


def test_document_success_answer_gives_each_task_its_session_number(
    adapter: UspeedoAdapter,
) -> None:
    batch = [target(0, "13800138000", "uSpeedo"), target(1, "13800138001", "Other")]
    result = adapter.classify(batch, 200, None, EXAMPLE_ANSWER)
    assert [(r.verdict, r.provider_message_id, r.cost) for r in result.results] == [
        (Verdict.ACCEPTED, "session_no_1", None),
        (Verdict.ACCEPTED, "session_no_2", None),
    ]


def test_task_content_groups_by_sender_in_order_and_omits_absent_params(
    adapter: UspeedoAdapter,
) -> None:
    batch = [
        target(0, "4071", "A", ["x"]),
        target(1, "4072", "B"),
        target(2, "4073", "A", []),
        target(3, "4074", "B", ["y", "z"]),
    ]
    job = JobContext("job", "T9", None, None)
    assert adapter.build_request(batch, job).json == {
        "TaskContent": [
            {
                "TemplateId": "T9",
                "SenderId": "A",
                "Target": [
                    {"Phone": "4071", "TemplateParams": ["x"]},
                    {"Phone": "4073", "TemplateParams": []},
                ],
            },
            {
                "TemplateId": "T9",
                "SenderId": "B",
                "Target": [{"Phone": "4072"}, {"Phone": "4074", "TemplateParams": ["y", "z"]}],
            },
        ]
    }
    answer = b'{"RetCode": 0, "SessionNo": ["sa", "sb"], "FailedTargetPhones": []}'
    ids = [r.provider_message_id for r in adapter.classify(batch, 200, None, answer).results]
    assert ids == ["sa", "sb", "sa", "sb"]


def test_failed_target_phones_fail_with_their_reason_and_the_rest_are_accepted(
    adapter: UspeedoAdapter,
) -> None:
    batch = [target(0, "13800138000"), target(1, "12"), target(2, "13800138002")]
    answer = json.dumps(
        {
            "RetCode": 0,
            "Message": "success",
            "SessionNo": ["s"],
            "FailedTargetPhones": [
                {"Phone": "12", "TemplateParams": [], "FailureReason": "Invalid phone number"},
                {"Phone": "99999999", "FailureReason": "not ours: ignored"},
            ],
        }
    ).encode()
    result = adapter.classify(batch, 200, None, answer)
    assert [(r.verdict, r.provider_message_id, r.error) for r in result.results] == [
        (Verdict.ACCEPTED, "s", None),
        (Verdict.FAILED, None, "Invalid phone number"),
        (Verdict.ACCEPTED, "s", None),
    ]


@pytest.mark.parametrize(
    ("code", "message", "verdict"),
    [
        (215392, "Invalid parameter [TemplateId]", Verdict.FAILED),
        (215397, "Missing required parameter [SenderId]", Verdict.FAILED),
        (215400, "Server error", Verdict.RETRY),
        (123, "Something undocumented", Verdict.FAILED),
    ],
)
def test_ret_codes_apply_to_every_recipient_with_their_message(
    adapter: UspeedoAdapter, code: int, message: str, verdict: Verdict
) -> None:
    body = json.dumps({"RetCode": code, "Message": message}).encode()
    result = adapter.classify([target(0, "4071"), target(1, "4072")], 200, None, body)
    assert [(r.verdict, r.error_code, r.error) for r in result.results] == [
        (verdict, str(code), message)
    ] * 2


def test_session_numbers_that_do_not_match_the_tasks_leave_recipients_uncertain(
    adapter: UspeedoAdapter,
) -> None:
    answer = json.dumps(
        {
            "RetCode": 0,
            "SessionNo": ["s1", "s2"],
            "FailedTargetPhones": [{"Phone": "4072", "FailureReason": "Blocked"}],
        }
    ).encode()
    result = adapter.classify([target(0, "4071"), target(1, "4072")], 200, None, answer)
    assert [(r.verdict, r.error) for r in result.results] == [
        (Verdict.UNCERTAIN, "2 SessionNo for 1 TaskContent elements"),
        (Verdict.FAILED, "Blocked"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"<html>502</html>",
        b"[]",
        b'{"RetCode": "0", "SessionNo": ["s"], "FailedTargetPhones": []}',
        b'{"RetCode": 0, "SessionNo": ["s"]}',
        b'{"RetCode": 0, "FailedTargetPhones": []}',
        b'{"RetCode": 0, "SessionNo": ["s"], "FailedTargetPhones": [{"Reason": "x"}]}',
    ],
)
def test_unreadable_200_answers_are_uncertain(adapter: UspeedoAdapter, body: bytes) -> None:
    result = adapter.classify([target(0, "4071")], 200, None, body)
    assert [r.verdict for r in result.results] == [Verdict.UNCERTAIN]


def test_http_401_is_a_permanent_bad_credentials_failure() -> None:
    exchange = send_to_local(make, [target(0, "4071")], b"Unauthorized", status=401, context=JOB)
    assert [(r.verdict, r.error_code) for r in exchange.result.results] == [(Verdict.FAILED, "401")]
    assert exchange.result.bad_credentials


@pytest.mark.parametrize("status", [429, 500, 502])
def test_http_status_decides_before_a_ret_code_body(adapter: UspeedoAdapter, status: int) -> None:
    body = b'{"RetCode": 215392, "Message": "Invalid parameter [TemplateId]"}'
    result = adapter.classify([target(0, "4071")], status, 2.0, body)
    assert [r.verdict for r in result.results] == [Verdict.RETRY]
    assert result.retry_after_s == 2.0


def test_prepared_recipients_have_no_segments_and_digits_addresses(
    adapter: UspeedoAdapter,
) -> None:
    messages = [
        (0, StoredMessage("+86 138 0013 8000", params=["123456"])),
        (1, StoredMessage("0712345678")),
        (2, StoredMessage("not a number")),
    ]
    recipients, rejections = prepare(adapter, messages, None, "uSpeedo")
    assert [(r.address, r.segments, r.params, r.sender, r.cost_parts) for r in recipients] == [
        ("8613800138000", None, ["123456"], "uSpeedo", 1),
        ("40712345678", None, None, "uSpeedo", 1),
    ]
    assert [r.index for r in rejections] == [2]


def test_a_number_repeated_in_a_chunk_goes_to_separate_requests() -> None:
    adapter = make(batch_size=3)
    batch = [target(i, "4071" if i % 2 else f"40{i}") for i in range(8)]
    groups = adapter.group(batch)
    assert [[r.index for r in g] for g in groups] == [[0, 1, 2], [3, 4, 6], [5], [7]]


def test_batch_size_defaults_to_100() -> None:
    assert make().account.batch_size == 100


recipients_strategy = st.lists(
    st.tuples(st.sampled_from(["4071", "4072", "4073", "4074"]), st.sampled_from(["A", "B"])),
    max_size=60,
)


@given(
    pairs=recipients_strategy,
    batch_size=st.integers(1, 10),
    messages_per_second=st.integers(1, 12),
)
def test_grouping_never_repeats_a_number_and_keeps_every_limit(
    pairs: list[tuple[str, str]], batch_size: int, messages_per_second: int
) -> None:
    adapter = make(batch_size=batch_size, messages_per_second=messages_per_second)
    batch: list[Recipient] = [target(i, phone, sender) for i, (phone, sender) in enumerate(pairs)]
    assert_requests_partition(batch, adapter.group(batch), batch_size, adapter.burst_parts)
