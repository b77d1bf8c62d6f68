"""The `voipcomm` API (provider document 004_239841fd749e911f.txt).

POST {base_url}/api-v2/index.php/sms/send, form-encoded, HTTP Basic
``api_key:api_password`` ("curl -u YOUR_API_KEY:YOUR_API_PASSWORD").
Quirks, each from the document:
- one ``msg`` to many numbers: "You can specify more than one phone number
  separate them by commas": a request carries recipients of one text and
  one sender, never one number twice (answers are matched by number);
- ``from`` "(optional): If empty the message will be considered a BULK
  message": without a sender we leave ``from`` out, as the document's curl
  example does (``to=...&msg=...``); omitted and empty mean the same, and an
  empty value could only be misread as a malformed number;
- ``delivery_date`` "YYYY-MM-DD HH:MM": the job's ``schedule_at`` in UTC
  (the document names no zone). Our workers release the job at that time,
  so the date is never in the future and the message goes at once;
- the answer is ``{"send_log": [...]}``, one entry per number, "to" in
  digits with the country code; ``smsid`` identifies the message, ``sale``
  is its price (no currency: the account's ``currency`` applies), ``code``
  200 is success, anything else a refusal described by ``code_desc``;
- "401: Invalid api credentials";
- no batch limit is documented: ``batch_size`` (default 100, at most 1000).
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
    basic_auth,
    decimal_text,
    decode_json_exact,
    distinct_batches,
)

PATH = "/api-v2/index.php/sms/send"
SUCCESS = "200"


def delivery_date(schedule_at: str) -> str:
    """ISO 8601 (with zone) -> ``YYYY-MM-DD HH:MM`` in UTC, seconds dropped."""
    moment = datetime.fromisoformat(schedule_at)
    if moment.tzinfo is None:  # the job contract requires a zone; UTC if one slipped through
        moment = moment.replace(tzinfo=UTC)
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M}"


def _same_message(recipient: Recipient) -> tuple[str | None, str | None]:
    return recipient.text, recipient.sender


class VoipcommAdapter(Adapter):
    kind = "voipcomm"
    credential_keys = ("api_key", "api_password")
    default_batch_size = 100
    max_batch_size = 1000
    default_number_format = "digits"

    def group(self, recipients: Sequence[Recipient]) -> list[list[Recipient]]:
        """One (text, sender) per request, never one number twice, the base's limits."""
        return distinct_batches(
            recipients, self.account.batch_size, self.burst_parts, key=_same_message
        )

    def build_request(self, batch: Sequence[Recipient], job: JobContext) -> HttpRequest:
        text, sender = _same_message(batch[0])
        if any(_same_message(recipient) != (text, sender) for recipient in batch):
            raise ValueError("a voipcomm request carries one text and one sender")
        form: dict[str, str] = {}
        if sender:
            form["from"] = sender
        form["to"] = ",".join(recipient.address for recipient in batch)
        form["msg"] = text or ""
        if job.schedule_at:
            form["delivery_date"] = delivery_date(job.schedule_at)
        credentials = self.account.credentials
        authorization = basic_auth(credentials["api_key"], credentials["api_password"])
        return HttpRequest(path=PATH, headers={"Authorization": authorization}, form=form)

    def parse_response(
        self, batch: Sequence[Recipient], status: int, body: bytes
    ) -> SendResult | Mapping[int, RecipientResult]:
        answer = decode_json_exact(body)
        if not isinstance(answer, dict):
            raise MalformedResponse("the answer is not a JSON object")
        log = answer.get("send_log")
        if log is None and "code" in answer:
            return _refused(batch, status, answer)
        if not isinstance(log, list):
            raise MalformedResponse("send_log is not a list")
        position_of = _positions(batch)
        results: dict[int, RecipientResult] = {}
        repeated: set[int] = set()
        for entry in log:
            number = entry.get("to") if isinstance(entry, dict) else None
            position = position_of.get(str(number)) if isinstance(number, str | int) else None
            if position is None:
                continue  # not one of ours: the recipient it should have been stays uncertain
            if position in results:
                repeated.add(position)
            results[position] = _entry_result(entry)
        for position in repeated:  # two entries for one number: which one is true is unknown
            results[position] = RecipientResult(
                Verdict.UNCERTAIN, error_code=str(status), error="answered twice in send_log"
            )
        return results

    def parse_client_error(
        self, batch: Sequence[Recipient], status: int, body: bytes
    ) -> SendResult:
        """4xx: permanent; 401 is "Invalid api credentials" (the document's words)."""
        try:
            answer = decode_json_exact(body)
        except MalformedResponse:
            answer = None
        if isinstance(answer, dict) and isinstance(answer.get("code_desc"), str):
            return _refused(batch, status, answer)
        if status == 401:
            answer = {"code": status, "code_desc": "Invalid api credentials"}
            return _refused(batch, status, answer)
        return super().parse_client_error(batch, status, body)


def _positions(batch: Sequence[Recipient]) -> dict[str, int]:
    """Answer number -> position: our address, or the E.164 digits the answer uses."""
    position_of: dict[str, int] = {}
    ambiguous: set[str] = set()
    for position, recipient in enumerate(batch):
        for key in {recipient.address, recipient.e164.lstrip("+")}:
            if key in position_of:
                ambiguous.add(key)
            position_of[key] = position
    return {key: position for key, position in position_of.items() if key not in ambiguous}


def _entry_result(entry: dict[str, Any]) -> RecipientResult:
    code = entry.get("code")
    if str(code) == SUCCESS:
        smsid = entry.get("smsid")
        return RecipientResult(
            Verdict.ACCEPTED,
            provider_message_id=str(smsid) if isinstance(smsid, str | int) and smsid else None,
            cost=decimal_text(entry.get("sale")),
        )
    description = entry.get("code_desc")
    status = entry.get("status")
    if not (isinstance(description, str) and description):
        description = f"refused with status {status}" if status else "refused by the provider"
    return RecipientResult(Verdict.FAILED, error_code=str(code), error=description)


def _refused(batch: Sequence[Recipient], status: int, answer: dict[str, Any]) -> SendResult:
    """A whole-request refusal: ``{"code": ..., "code_desc": ...}``."""
    code = answer.get("code")
    description = answer.get("code_desc")
    if str(code) == SUCCESS and status < 400:
        raise MalformedResponse("code 200 without a send_log")
    reason = description if isinstance(description, str) and description else f"code {code}"
    return SendResult(
        all_of(batch, Verdict.FAILED, str(code if code is not None else status), reason),
        http_status=status,
        bad_credentials=status in (401, 403),
    )
