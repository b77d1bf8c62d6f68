"""What a job will cost before it is sent: parts, encodings, money. Pure.

``smsbulk estimate FILE.json`` prints it. Parts are counted as the workers
count them (``producer.parts``), so the estimate is what the rate limiter
and ``price_per_part`` will see. It cannot know which numbers are invalid or
opted out, nor which texts exceed the account's ``max_parts``: every message
is counted as sent. A template job's text is the provider's and unknown
here: its parts are null and each recipient counts as one part, as the rate
limiter counts it.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel

from producer.accounts import AccountInfo
from producer.job import Job
from producer.parts import Encoding, count_parts


class MessageEstimate(BaseModel):
    index: int
    parts: int | None  # null for a template: its text is the provider's
    encoding: Encoding | None
    ucs2_chars: list[str]  # the characters that forced UCS-2, first appearance first


class EncodingTotal(BaseModel):
    messages: int
    parts: int


class EstimateTotal(BaseModel):
    messages: int
    parts: int | None
    by_encoding: dict[Encoding, EncodingTotal]
    ucs2_chars: list[str]
    cost: str | None  # a decimal string, where the account has price_per_part
    currency: str | None


class Estimate(BaseModel):
    provider: str
    template: bool
    messages: list[MessageEstimate]
    total: EstimateTotal


def estimate(job: Job, account: AccountInfo) -> Estimate:
    """Parts and encoding of every message of a validated job, and the total."""
    if account.is_template:
        return _template_estimate(job, account)
    messages: list[MessageEstimate] = []
    by_encoding: dict[Encoding, EncodingTotal] = {}
    forcing: dict[str, None] = {}
    for index, message in enumerate(job.messages):
        text = message.text if message.text is not None else job.text
        # validate_job (JobCheck) refuses a message without a text for a non-template account.
        counted = count_parts(text or "")
        messages.append(
            MessageEstimate(
                index=index,
                parts=counted.parts,
                encoding=counted.encoding,
                ucs2_chars=list(counted.ucs2_chars),
            )
        )
        seen = by_encoding.setdefault(counted.encoding, EncodingTotal(messages=0, parts=0))
        seen.messages += 1
        seen.parts += counted.parts
        forcing.update(dict.fromkeys(counted.ucs2_chars))
    parts = sum(total.parts for total in by_encoding.values())
    return Estimate(
        provider=account.name,
        template=False,
        messages=messages,
        total=EstimateTotal(
            messages=len(messages),
            parts=parts,
            by_encoding=by_encoding,
            ucs2_chars=list(forcing),
            cost=_cost(account, parts),
            currency=account.currency if account.price_per_part is not None else None,
        ),
    )


def _template_estimate(job: Job, account: AccountInfo) -> Estimate:
    recipients = len(job.messages)
    return Estimate(
        provider=account.name,
        template=True,
        messages=[
            MessageEstimate(index=i, parts=None, encoding=None, ucs2_chars=[])
            for i in range(recipients)
        ],
        total=EstimateTotal(
            messages=recipients,
            parts=None,
            by_encoding={},
            ucs2_chars=[],
            cost=_cost(account, recipients),
            currency=account.currency if account.price_per_part is not None else None,
        ),
    )


def _cost(account: AccountInfo, parts: int) -> str | None:
    if account.price_per_part is None:
        return None
    return format(account.price_per_part * Decimal(parts), "f")
