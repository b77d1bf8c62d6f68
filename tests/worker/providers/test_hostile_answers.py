"""Answers no document shows, from a provider that is broken or hostile.

Every adapter kind gets the same treatment: an answer that would be a
success but is larger than `MAX_ANSWER_BYTES`, nested deeper than Python's
recursion allows, or not UTF-8 is a malformed answer of that request
(docs/INTERFACE.md, "Failure semantics": like a 200 that omits its recipients),
and a 4xx with such a body is still permanent. Nothing raises out of
`Adapter.send`, and every text that comes back can be stored (UTF-8).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from tests.worker.providers.helpers import account, recipient, send_to_local
from worker.providers.base import (
    MAX_ANSWER_BYTES,
    MAX_TEXT_CHARS,
    Adapter,
    Recipient,
    SendResult,
    Verdict,
)
from worker.providers.gosms import GosmsAdapter
from worker.providers.sendbulk import SendbulkAdapter
from worker.providers.uspeedo import UspeedoAdapter
from worker.providers.voipcomm import VoipcommAdapter

DEPTH = 200_000  # what a new user tried: json.loads raises RecursionError at ~1000


@dataclass(frozen=True)
class Kind:
    """An adapter kind, two recipients of one request, and its success answer."""

    make: Callable[[str], Adapter]
    batch: list[Recipient]
    success: Callable[[str], dict[str, Any]]  # the answer, with this text as every id


def _sendbulk(message_id: str) -> dict[str, Any]:
    return {
        "responses": [
            {"response-code": 200, "response-description": "Success", "mobile": m, "messageid": i}
            | {"clientsmsid": n}
            for n, (m, i) in enumerate([("254700000001", message_id), ("254700000002", "b")])
        ]
    }


def _gosms(message_id: str) -> dict[str, Any]:
    return {
        "success": True,
        "currency": "EUR",
        "orderSummary": [
            {"arrayPosition": 0, "messageId": message_id, "amount": 0.03},
            {"arrayPosition": 1, "messageId": "b", "amount": 0.03},
        ],
    }


def _uspeedo(message_id: str) -> dict[str, Any]:
    return {"RetCode": 0, "Message": "success", "SessionNo": [message_id], "FailedTargetPhones": []}


def _voipcomm(message_id: str) -> dict[str, Any]:
    return {
        "send_log": [
            {"code": 200, "code_desc": "", "to": "40712345678", "smsid": message_id, "sale": 0.01},
            {"code": 200, "code_desc": "", "to": "40712345679", "smsid": "b", "sale": 0.01},
        ]
    }


KINDS = {
    "sendbulk": Kind(
        lambda url: SendbulkAdapter(
            account("sendbulk", base_url=url, partner_id="P", api_key="K", shortcode="S")
        ),
        [recipient(0, "254700000001"), recipient(1, "254700000002")],
        _sendbulk,
    ),
    "gosms": Kind(
        lambda url: GosmsAdapter(account("gosms", base_url=url, api_key="K")),
        [recipient(0, "0712345678"), recipient(1, "0712345679")],
        _gosms,
    ),
    "uspeedo": Kind(
        lambda url: UspeedoAdapter(
            account("uspeedo", base_url=url, access_key_id="I", access_key_secret="S")
        ),
        [
            recipient(0, "40712345678", None, sender="uSpeedo", segments=None),
            recipient(1, "40712345679", None, sender="uSpeedo", segments=None),
        ],
        _uspeedo,
    ),
    "voipcomm": Kind(
        lambda url: VoipcommAdapter(
            account("voipcomm", base_url=url, api_key="K", api_password="P")
        ),
        [recipient(0, "40712345678"), recipient(1, "40712345679")],
        _voipcomm,
    ),
}


def padded(answer: dict[str, Any], padding: str) -> bytes:
    """The answer with one more key whose value is `padding` (raw JSON text)."""
    return (json.dumps(answer)[:-1] + f', "padding": {padding}}}').encode()


def huge(answer: dict[str, Any]) -> bytes:
    return padded(answer, json.dumps("x" * MAX_ANSWER_BYTES))


def deep(answer: dict[str, Any]) -> bytes:
    return padded(answer, "[" * DEPTH + "]" * DEPTH)


def utf16(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer).encode("utf-16")  # json.loads(bytes) would read it


HOSTILE = {"larger than 16 MiB": huge, "nested 200,000 deep": deep, "UTF-16": utf16}


def assert_storable(result: SendResult) -> None:
    for item in result.results:
        for text in (item.provider_message_id, item.cost, item.error_code, item.error):
            if text is not None:
                text.encode("utf-8")  # what the commit does; a lone surrogate raises
                assert len(text) <= MAX_TEXT_CHARS


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hostile", HOSTILE)
def test_an_unreadable_success_is_a_malformed_answer(kind: str, hostile: str) -> None:
    spec = KINDS[kind]
    body = HOSTILE[hostile](spec.success("a"))
    result = send_to_local(spec.make, spec.batch, body).result
    assert result.http_status == 200
    assert [r.verdict for r in result.results] == [Verdict.UNCERTAIN] * len(spec.batch)
    assert all(r.error_code == "200" for r in result.results)
    assert_storable(result)


@pytest.mark.parametrize("kind", KINDS)
def test_bytes_that_are_not_utf8_are_a_malformed_answer(kind: str) -> None:
    spec = KINDS[kind]
    body = json.dumps(spec.success("a")).encode()[:-1] + b', "padding": "caf\xe9"}'
    result = send_to_local(spec.make, spec.batch, body).result
    assert [r.verdict for r in result.results] == [Verdict.UNCERTAIN] * len(spec.batch)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_client_error_with_an_unreadable_body_is_still_permanent(kind: str, hostile: str) -> None:
    spec = KINDS[kind]
    body = HOSTILE[hostile]({"message": "no", "code_desc": "no", "RetCode": 215392})
    result = send_to_local(spec.make, spec.batch, body, status=400).result
    assert [r.verdict for r in result.results] == [Verdict.FAILED] * len(spec.batch)
    assert_storable(result)


@pytest.mark.parametrize("kind", KINDS)
def test_texts_that_cannot_be_stored_are_made_storable(kind: str) -> None:
    """A JSON escape may name a lone surrogate (valid JSON, not Unicode): the
    recipient was taken, and its id is kept as far as it can be written."""
    spec = KINDS[kind]
    body = json.dumps(spec.success("id-\ud800")).encode()  # ensure_ascii: \\ud800 in the body
    result = send_to_local(spec.make, spec.batch, body).result
    assert [r.verdict for r in result.results] == [Verdict.ACCEPTED] * len(spec.batch)
    assert result.results[0].provider_message_id == "id-\ufffd"
    assert_storable(result)


@pytest.mark.parametrize("kind", KINDS)
def test_an_endless_text_is_cut_to_what_an_outcome_holds(kind: str) -> None:
    spec = KINDS[kind]
    body = json.dumps(spec.success("x" * 1_000_000)).encode()
    result = send_to_local(spec.make, spec.batch, body).result
    assert [r.verdict for r in result.results] == [Verdict.ACCEPTED] * len(spec.batch)
    assert result.results[0].provider_message_id == "x" * MAX_TEXT_CHARS
    assert_storable(result)


def _throttling_sendbulk(url: str) -> Adapter:
    return SendbulkAdapter(
        account("sendbulk", base_url=url, partner_id="P", api_key="K", shortcode="S", retry_max_s=2)
    )


@pytest.mark.parametrize(
    ("retry_after", "expected_s"),
    [
        ("1", 1.0),
        ("1e12", 2.0),  # what a new user tried: the job waited for good
        ("inf", 2.0),
        ("1e400", 2.0),
        ("-5", 0.0),
        ("nan", None),  # our own backoff applies
        ("soon", None),
        (format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True), 2.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
    ],
    ids=["1", "1e12", "inf", "1e400", "-5", "nan", "soon", "date-in-an-hour", "date-past"],
)
def test_a_429s_retry_after_is_honoured_up_to_retry_max_s(
    retry_after: str, expected_s: float | None
) -> None:
    batch = KINDS["sendbulk"].batch
    result = send_to_local(
        _throttling_sendbulk, batch, b"slow down", status=429, headers={"Retry-After": retry_after}
    ).result
    assert result.throttled
    assert [r.verdict for r in result.results] == [Verdict.RETRY] * len(batch)
    assert result.retry_after_s == expected_s
