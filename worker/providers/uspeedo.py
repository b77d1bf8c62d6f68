"""The `uspeedo` API (provider document 003_052261f1e3ba1040.txt).

POST {base_url}/api/v1/usms/SendBatchUSMSMessage, JSON ``{"TaskContent": [...]}``,
``Authorization: Basic base64(ACCESSKEY_ID:ACCESSKEY_SECRET)``.
Quirks, each from the document:
- template based: each TaskContent element is one ``TemplateId`` and one
  ``SenderId`` with a ``Target`` list of ``{"Phone", "TemplateParams"}``; we
  never know the text, so ``segments`` is None (one rate-limit part each);
- the document also calls TaskContent a "JSON string" but says "Real API
  expects the full JSON structure": we send the structure;
- the answer lists only failures, by number: "FailedTargetPhones ... Phone,
  TemplateParams, FailureReason"; everyone else was taken. Matching by
  number means a number never appears twice in one request (``group``);
- ``SessionNo`` is a list, one per TaskContent element in order (the
  docs/INTERFACE.md reading): it is each recipient's provider_message_id;
- errors are ``{"RetCode": 215392, "Message": "Invalid parameter
  [TemplateId]"}``; 215397 missing parameter, 215400 server error;
- no batch limit is documented: ``batch_size`` (default 100, at most 1000).
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
    basic_auth,
    decode_json,
    distinct_batches,
)

PATH = "/api/v1/usms/SendBatchUSMSMessage"
SUCCESS = 0
# "215400 | Server error": the provider failed, not our request. uSpeedo
# answers errors in a 200 body, so this is its HTTP 5xx, and docs/INTERFACE.md's
# failure semantics make a server error retryable under either policy.
SERVER_ERROR = 215400


class UspeedoAdapter(Adapter):
    kind = "uspeedo"
    credential_keys = ("access_key_id", "access_key_secret")
    default_batch_size = 100
    max_batch_size = 1000
    is_template = True
    needs_sender = True  # every TaskContent element has its SenderId
    default_number_format = "digits"

    def group(self, recipients: Sequence[Recipient]) -> list[list[Recipient]]:
        """The base's limits, and never one number twice in a request."""
        return distinct_batches(recipients, self.account.batch_size, self.burst_parts)

    def build_request(self, batch: Sequence[Recipient], job: JobContext) -> HttpRequest:
        credentials = self.account.credentials
        tasks = [
            {
                # template_id and sender are required at submission for
                # uspeedo; "" lets the provider name what is missing.
                "TemplateId": job.template_id or "",
                "SenderId": sender,
                "Target": [_target(recipient) for recipient in members],
            }
            for sender, members in _tasks(batch).items()
        ]
        authorization = basic_auth(credentials["access_key_id"], credentials["access_key_secret"])
        return HttpRequest(
            path=PATH,
            headers={"Authorization": authorization, "Accept": "application/json"},
            json={"TaskContent": tasks},
        )

    def parse_response(
        self, batch: Sequence[Recipient], status: int, body: bytes
    ) -> SendResult | Mapping[int, RecipientResult]:
        answer = decode_json(body)
        if not isinstance(answer, dict):
            raise MalformedResponse("the answer is not a JSON object")
        code = answer.get("RetCode")
        if type(code) is not int:
            raise MalformedResponse("RetCode is not an integer")
        if code != SUCCESS:
            message = answer.get("Message")
            reason = message if isinstance(message, str) and message else f"RetCode {code}"
            verdict = Verdict.RETRY if code == SERVER_ERROR else Verdict.FAILED
            return SendResult(all_of(batch, verdict, str(code), reason))
        failed = _failed_phones(answer.get("FailedTargetPhones"))
        sessions = answer.get("SessionNo")
        if not isinstance(sessions, list):
            raise MalformedResponse("SessionNo is not a list")
        tasks = _tasks(batch)
        task_of = {
            recipient.index: task
            for task, members in enumerate(tasks.values())
            for recipient in members
        }
        aligned = len(sessions) == len(tasks)
        results: dict[int, RecipientResult] = {}
        for position, recipient in enumerate(batch):
            if recipient.address in failed:
                results[position] = RecipientResult(Verdict.FAILED, error=failed[recipient.address])
            elif aligned:
                session = sessions[task_of[recipient.index]]
                results[position] = RecipientResult(
                    Verdict.ACCEPTED, provider_message_id=str(session) if session else None
                )
            else:
                # Which SessionNo belongs to which task is unknown, and a task
                # without one may not have been taken: never assume it was.
                results[position] = RecipientResult(
                    Verdict.UNCERTAIN,
                    error_code=str(status),
                    error=f"{len(sessions)} SessionNo for {len(tasks)} TaskContent elements",
                )
        return results


def _tasks(batch: Sequence[Recipient]) -> dict[str, list[Recipient]]:
    """TaskContent elements in order, keyed by sender.

    The TemplateId is the job's (JobContext), the same for a whole request, so
    grouping by (template_id, sender) is grouping by sender. `build_request`
    and `parse_response` both call this: SessionNo is aligned with its order.
    """
    tasks: dict[str, list[Recipient]] = {}
    for recipient in batch:
        tasks.setdefault(recipient.sender or "", []).append(recipient)
    return tasks


def _target(recipient: Recipient) -> dict[str, Any]:
    target: dict[str, Any] = {"Phone": recipient.address}
    if recipient.params is not None:
        target["TemplateParams"] = list(recipient.params)
    return target


def _failed_phones(value: object) -> dict[str, str]:
    """Phone -> FailureReason; a success answer without the list is unreadable."""
    if not isinstance(value, list):
        raise MalformedResponse("FailedTargetPhones is not a list")
    failed: dict[str, str] = {}
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("Phone"), str):
            raise MalformedResponse("a FailedTargetPhones item without a Phone")
        reason = item.get("FailureReason")
        failed[item["Phone"]] = reason if isinstance(reason, str) and reason else "failed"
    return failed
