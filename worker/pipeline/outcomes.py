"""From a provider's verdict to a recipient's stored outcome (pure).

The failure semantics table of docs/INTERFACE.md lives here: the adapter says
what happened (accepted, failed, retry, uncertain), the job's delivery
policy and the attempt count decide the status.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from producer.core.store import StoredOutcome, now_s
from producer.job import FINAL_STATUSES
from worker.providers.account import Account
from worker.providers.base import Recipient, RecipientResult, Verdict


def is_final(outcome: StoredOutcome | None) -> bool:
    return outcome is not None and outcome.status in FINAL_STATUSES


def simple(
    status: str, previous: StoredOutcome | None, *, e164: str | None = None, **fields: Any
) -> StoredOutcome:
    """An outcome decided without a provider answer (rejected, expired, …)."""
    attempts = fields.pop("attempts", previous.attempts if previous else 0)
    if e164 is None and previous is not None:
        e164 = previous.e164
    return StoredOutcome(status, e164=e164, attempts=attempts, updated_at=now_s(), **fields)


def from_result(
    account: Account,
    at_most_once: bool,
    recipient: Recipient,
    result: RecipientResult,
    attempt: int,
) -> StoredOutcome:
    verdict = result.verdict
    if verdict is Verdict.UNCERTAIN and at_most_once:
        status = "unknown"
    elif verdict in (Verdict.RETRY, Verdict.UNCERTAIN):
        status = "pending" if attempt < account.max_attempts else "failed"
    else:
        status = str(verdict)
    error = result.error
    if status == "failed" and verdict is not Verdict.FAILED:
        error = f"gave up after {attempt} attempts: {error}"
    cost, currency = result.cost, result.currency
    if status == "accepted" and cost is None and account.price_per_part is not None:
        cost = str(account.price_per_part * Decimal(recipient.cost_parts))
    if cost is not None and currency is None:
        currency = account.currency
    return StoredOutcome(
        status,
        e164=recipient.e164,
        provider_message_id=result.provider_message_id,
        segments=recipient.segments,
        cost=cost,
        currency=currency,
        error_code=result.error_code,
        error=error,
        attempts=attempt,
        updated_at=now_s(),
    )
