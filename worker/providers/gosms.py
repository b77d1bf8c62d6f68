"""The `gosms` API (documents 001_19c148331afa61d2 single, 000_61a675938e9f086e batch).

POST {base_url}/v1/message/send-batch, JSON ``{"messages": [...]}``, or
/v1/message/send for one message; auth is the ``X-Authorization`` header.
Quirks, each from the documents:
- recipients are "National (Romania): 07PPXXXXXX" or "00 prefix" abroad:
  number_format ``national`` by default (producer/phone.py);
- "Concatenated SMS – A message containing up to 39,015 characters", 153
  characters a part: longer texts are rejected before sending;
- the batch answer's ``orderSummary`` items map back by ``arrayPosition``,
  each with its ``amount`` (a JSON number, read exactly) and ``messageId``;
  the single answer has ``messageId`` and ``balanceDeduction`` (a string);
  ``currency`` is given once per answer;
- no batch limit is documented: ``batch_size`` (default 100, at most 1000);
- ``scheduleDatetime`` "YYYY-MM-DDTHH:MM:SS.mmmZ": we send the job's
  ``schedule_at`` in UTC (the ``Z`` form; the other form has no zone) so
  that ``validity`` ("how long the message remains valid from the scheduled
  date and time") counts from the same instant as ours. The job is released
  by our workers at ``schedule_at``, so the time is never in the future;
- the documents show successes only; errors come as
  ``{"success": false, "message": ...}`` (HTTP 401 for a wrong key).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from worker.providers.base import (
    Adapter,
    HttpRequest,
    JobContext,
    MalformedResponse,
    Recipient,
    RecipientResult,
    SendResult,
    Verdict,
    all_of,
    decimal_text,
    decode_json_exact,
)

SINGLE_PATH = "/v1/message/send"
BATCH_PATH = "/v1/message/send-batch"
MAX_TEXT_CHARS = 39_015


def schedule_datetime(schedule_at: str) -> str:
    """ISO 8601 (with zone) -> ``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC."""
    moment = datetime.fromisoformat(schedule_at)
    if moment.tzinfo is None:  # the job contract requires a zone; UTC if one slipped through
        moment = moment.replace(tzinfo=UTC)
    utc = moment.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


class GosmsAdapter(Adapter):
    kind = "gosms"
    credential_keys = ("api_key",)
    default_batch_size = 100
    max_batch_size = 1000
    default_max_parts = 255  # 39,015 / 153
    max_text_chars = MAX_TEXT_CHARS
    default_number_format = "national"

    def build_request(self, batch: Sequence[Recipient], job: JobContext) -> HttpRequest:
        headers = {"X-Authorization": self.account.credentials["api_key"]}
        messages = [_message(recipient, job) for recipient in batch]
        if len(messages) == 1:  # "a single message may use /message/send"
            return HttpRequest(path=SINGLE_PATH, headers=headers, json=messages[0])
        return HttpRequest(path=BATCH_PATH, headers=headers, json={"messages": messages})

    def parse_response(
        self, batch: Sequence[Recipient], status: int, body: bytes
    ) -> SendResult | Mapping[int, RecipientResult]:
        answer = _answer(body)
        if answer.get("success") is not True:
            return _refused(batch, status, answer)
        currency = answer.get("currency") if isinstance(answer.get("currency"), str) else None
        if len(batch) == 1:
            return {
                0: RecipientResult(
                    Verdict.ACCEPTED,
                    provider_message_id=_text(answer.get("messageId")),
                    cost=decimal_text(answer.get("balanceDeduction")),
                    currency=currency,
                )
            }
        return _order_summary(batch, answer, currency)

    def parse_client_error(
        self, batch: Sequence[Recipient], status: int, body: bytes
    ) -> SendResult:
        """4xx: permanent, in GoSMS's own words when the body has them."""
        try:
            answer = _answer(body)
        except MalformedResponse:
            return super().parse_client_error(batch, status, body)
        if not isinstance(answer.get("message"), str):
            return super().parse_client_error(batch, status, body)
        return _refused(batch, status, answer)


def _message(recipient: Recipient, job: JobContext) -> dict[str, Any]:
    message: dict[str, Any] = {"recipient": recipient.address, "message": recipient.text or ""}
    if recipient.sender:
        message["sender"] = recipient.sender
    # Validity counts from schedule_at, else from the job's creation (as ours does).
    validity_start = job.schedule_at or (job.created_at if job.validity_minutes else None)
    if validity_start:
        message["scheduleDatetime"] = schedule_datetime(validity_start)
    if job.validity_minutes:
        message["validity"] = job.validity_minutes
    return message


def _answer(body: bytes) -> dict[str, Any]:
    answer = decode_json_exact(body)
    if not isinstance(answer, dict):
        raise MalformedResponse("the answer is not a JSON object")
    return answer


def _text(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _refused(batch: Sequence[Recipient], status: int, answer: dict[str, Any]) -> SendResult:
    """``{"success": false, "message": ...}``: the whole request was refused."""
    if answer.get("success") is not False and status < 400:
        raise MalformedResponse("neither success true nor false in the answer")
    message = answer.get("message")
    reason = message if isinstance(message, str) and message else "refused by the provider"
    return SendResult(
        all_of(batch, Verdict.FAILED, str(status), reason),
        http_status=status,
        bad_credentials=status in (401, 403),
    )


def _order_summary(
    batch: Sequence[Recipient], answer: dict[str, Any], currency: str | None
) -> dict[int, RecipientResult]:
    summary = answer.get("orderSummary")
    if not isinstance(summary, list):
        raise MalformedResponse("orderSummary is not a list")
    results: dict[int, RecipientResult] = {}
    repeated: set[int] = set()
    for item in summary:
        position = item.get("arrayPosition") if isinstance(item, dict) else None
        if type(position) is not int or not 0 <= position < len(batch):
            continue  # not one of ours: the recipient it should have been stays uncertain
        if position in results:
            repeated.add(position)
        results[position] = RecipientResult(
            Verdict.ACCEPTED,
            provider_message_id=_text(item.get("messageId")),
            cost=decimal_text(item.get("amount")),
            currency=currency,
        )
    for position in repeated:  # two answers for one message: which one is true is unknown
        results[position] = RecipientResult(
            Verdict.UNCERTAIN, error_code="200", error="answered twice in orderSummary"
        )
    return results
