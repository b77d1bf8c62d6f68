"""From a provider's verdict to a recipient's stored outcome (pure).

The failure semantics table of docs/INTERFACE.md lives here: the adapter says
what happened (accepted, failed, retry, uncertain), the job's delivery
policy and the attempt count decide the status.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    if previous is not None:
        e164 = previous.e164 if e164 is None else e164
        fields.setdefault("account", previous.account)
        fields.setdefault("since", previous.since)
    return StoredOutcome(status, e164=e164, attempts=attempts, updated_at=now_s(), **fields)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a route job's recipient stands on its list of accounts: the
    account after the one it is on (None: the last), and the attempts it made
    on earlier ones. A one-account job's recipients have no Place."""

    next_account: str | None
    since: int


def from_result(
    account: Account,
    at_most_once: bool,
    recipient: Recipient,
    result: RecipientResult,
    attempt: int,
    place: Place | None = None,
) -> StoredOutcome:
    """The recipient's outcome after a request (``attempt``: its attempts
    so far, on every account). On a route, a recipient the provider provably
    did not take (attempts on this account ran out on "not sent" errors, or
    refused permanently) moves on to the next account, pending, instead of
    failing; never after an answer that may have been a send."""
    verdict = result.verdict
    attempts_here = attempt - (place.since if place else 0)
    if verdict is Verdict.UNCERTAIN and at_most_once:
        status = "unknown"
    elif verdict in (Verdict.RETRY, Verdict.UNCERTAIN):
        status = "pending" if attempts_here < account.max_attempts else "failed"
    else:
        status = str(verdict)
    error = result.error
    if status == "failed" and verdict is not Verdict.FAILED:
        error = f"gave up after {attempts_here} attempts: {error}"
    on, since = (account.name, place.since) if place else (None, None)
    not_taken = verdict in (Verdict.RETRY, Verdict.FAILED)
    if status == "failed" and not_taken and place is not None and place.next_account:
        status, on, since = "pending", place.next_account, attempt
        error = f"{account.name}: {error}; moved on to {place.next_account}"
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
        account=on,
        since=since,
    )
