"""The `sendbulk` API (provider document 002_56359e19d5e8142a.txt).

POST {base_url}/api/services/sendbulk, JSON ``{"count": N, "smslist": [...]}``.
Quirks, each from the document:
- credentials travel inside every list item ("The partnerID, apikey, and
  shortcode should be the same for all JSON objects within the smslist
  array"); there is no auth header;
- the document's second example item lists ``pass_type`` twice; we send
  every documented field exactly once, ``pass_type`` = "plain";
- ``count`` is "The count of the SMS list": always ``len(smslist)``;
- ``clientsmsid`` is "Your preferred dynamic identifier", an integer: we use
  the message's index in the job, unique within a request, and map each
  answer item back by it;
- up to 1000 messages per request ("send up to 1000 unique messages");
- an error answers ``{"response-code": 1006, "response-description":
  "Invalid credentials"}`` instead of a ``responses`` list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    decode_json,
)

PATH = "/api/services/sendbulk"
SUCCESS = 200
INVALID_CREDENTIALS = 1006


class SendbulkAdapter(Adapter):
    kind = "sendbulk"
    credential_keys = ("partner_id", "api_key", "shortcode")
    default_batch_size = 1000
    max_batch_size = 1000

    def build_request(self, batch: Sequence[Recipient], job: JobContext) -> HttpRequest:
        credentials = self.account.credentials
        smslist = [
            {
                "partnerID": credentials["partner_id"],
                "apikey": credentials["api_key"],
                "pass_type": "plain",
                "clientsmsid": recipient.index,
                "mobile": recipient.address,
                "message": recipient.text,
                # The job's sender when given, else the account's shortcode.
                "shortcode": recipient.sender or credentials["shortcode"],
            }
            for recipient in batch
        ]
        return HttpRequest(path=PATH, json={"count": len(smslist), "smslist": smslist})

    def parse_response(
        self, batch: Sequence[Recipient], status: int, body: bytes
    ) -> SendResult | Mapping[int, RecipientResult]:
        answer = decode_json(body)
        if not isinstance(answer, dict):
            raise MalformedResponse("the answer is not a JSON object")
        items = answer.get("responses")
        if items is None:
            return _whole_request_error(batch, answer)
        if not isinstance(items, list):
            raise MalformedResponse("responses is not a list")
        position_of = {recipient.index: position for position, recipient in enumerate(batch)}
        results: dict[int, RecipientResult] = {}
        for item in items:
            client_id = item.get("clientsmsid") if isinstance(item, dict) else None
            position = position_of.get(client_id) if isinstance(client_id, int) else None
            if position is None:
                continue  # not one of ours: the recipients it should have been stay uncertain
            results[position] = _item_result(item)
        return results


def _item_result(item: dict[str, Any]) -> RecipientResult:
    code = item.get("response-code")
    if code == SUCCESS:
        message_id = item.get("messageid")
        return RecipientResult(
            Verdict.ACCEPTED, provider_message_id=None if message_id is None else str(message_id)
        )
    return RecipientResult(
        Verdict.FAILED,
        error_code=str(code),
        error=str(item.get("response-description") or "refused by the provider"),
    )


def _whole_request_error(batch: Sequence[Recipient], answer: dict[str, Any]) -> SendResult:
    code = answer.get("response-code")
    if code is None:
        raise MalformedResponse("neither responses nor response-code in the answer")
    description = str(answer.get("response-description") or "refused by the provider")
    return SendResult(
        all_of(batch, Verdict.FAILED, str(code), description),
        bad_credentials=code == INVALID_CREDENTIALS,
    )
