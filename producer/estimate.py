"""What a job will cost before it is sent: parts, encodings, money. Pure.

``smsbulk estimate FILE.json`` prints it. Parts are counted as the workers
count them (``producer.parts``), so the estimate is what the rate limiter
and ``price_per_part`` will see. It cannot know which numbers are invalid or
opted out, nor which texts exceed the account's ``max_parts``: every message
is counted as sent. A template job's text is the provider's and unknown
here: its parts are null and each recipient counts as one part, as the rate
limiter counts it.

A job on a route (``producer.routes``) is priced recipient by recipient at
the account the recipient would go to first: the first of its number's
region's list (a number that does not parse takes the route's ``accounts``);
``accounts`` breaks the estimate down by account, for every job.

A job with ``max_cost`` is told whether the total is within it (``spend_cap``).

Messages, totals and cost count each text as the job sends it: transliterated
(``producer.transliterate``) when the job says ``transliterate``.
``transliteration`` gives the job's parts both ways, whatever the job says,
and the characters transliteration replaces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from pydantic import BaseModel

from producer.accounts import AccountInfo, routes_of
from producer.job import Job
from producer.parts import Encoding, count_parts
from producer.phone import InvalidNumber, parse_number
from producer.routes import Route
from producer.transliterate import replaced_chars, transliterate


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


class AccountEstimate(BaseModel):
    """What goes to one account first: its recipients, their parts (null for
    a template account) and what they cost there."""

    messages: int
    parts: int | None
    cost: str | None
    currency: str | None


class TransliterationEstimate(BaseModel):
    """The job's text parts as written and transliterated (null for a
    template job); ``enabled`` is the job's ``transliterate``, which of the
    two the job sends (``total.parts`` counts only text accounts')."""

    enabled: bool
    parts_as_written: int | None
    parts_transliterated: int | None
    replaced_chars: list[str]  # distinct, first appearance first


class CapEstimate(BaseModel):
    """A job with ``max_cost``: whether the estimated total is within it
    (null when the total has no cost). A route job's recipients are priced
    at their first accounts: failing over may cost more."""

    max_cost: str
    covers: bool | None


class Estimate(BaseModel):
    provider: str
    template: bool
    messages: list[MessageEstimate]
    total: EstimateTotal
    accounts: dict[str, AccountEstimate] = {}
    transliteration: TransliterationEstimate | None = None
    spend_cap: CapEstimate | None = None


def estimate_job(job: Job, accounts: Mapping[str, AccountInfo]) -> Estimate:
    """The estimate of a validated job, on its account or its route."""
    route = routes_of(accounts).get(job.provider)
    if route is None or job.provider in accounts:
        result = estimate(job, accounts[job.provider])
    else:
        result = route_estimate(job, route, accounts)
    if job.max_cost is not None:
        cost = result.total.cost
        covers = None if cost is None else Decimal(cost) <= Decimal(job.max_cost)
        result.spend_cap = CapEstimate(max_cost=job.max_cost, covers=covers)
    return result


@dataclass(slots=True)
class _Both:
    """The texts' parts as written and transliterated, and what it replaces."""

    enabled: bool
    as_written: int = 0
    transliterated: int = 0
    texts: int = 0
    replaced: dict[str, None] = field(default_factory=dict)

    def count(self, text: str) -> str:
        """Count ``text`` both ways; the text the job sends."""
        gsm = transliterate(text)
        self.texts += 1
        self.as_written += count_parts(text).parts
        self.transliterated += count_parts(gsm).parts
        self.replaced.update(dict.fromkeys(replaced_chars(text)))
        return gsm if self.enabled else text

    def estimate(self) -> TransliterationEstimate:
        return TransliterationEstimate(
            enabled=self.enabled,
            parts_as_written=self.as_written if self.texts else None,
            parts_transliterated=self.transliterated if self.texts else None,
            replaced_chars=list(self.replaced),
        )


def estimate(job: Job, account: AccountInfo) -> Estimate:
    """Parts and encoding of every message of a validated job, and the total."""
    result = (
        _template_estimate(job, account) if account.is_template else _text_estimate(job, account)
    )
    total = result.total
    result.accounts = {
        account.name: AccountEstimate(
            messages=total.messages,
            parts=total.parts,
            cost=total.cost,
            currency=total.currency,
        )
    }
    return result


def first_account(route: Route, to: str) -> str:
    """The account a recipient of the route goes to first, by its number's region."""
    try:
        region = parse_number(to, route.default_region).region
    except InvalidNumber:
        region = None  # the workers reject it; priced at the route's default list
    return route.accounts_for(region)[0]


def route_estimate(job: Job, route: Route, accounts: Mapping[str, AccountInfo]) -> Estimate:
    """A route job's estimate: each recipient counted at its first account."""
    messages: list[MessageEstimate] = []
    by_encoding: dict[Encoding, EncodingTotal] = {}
    forcing: dict[str, None] = {}
    # account -> [recipients, parts]; a template recipient counts as one part.
    sent: dict[str, list[int]] = {}
    both = _Both(job.transliterate)
    for index, message in enumerate(job.messages):
        account = accounts[first_account(route, message.to)]
        counts = sent.setdefault(account.name, [0, 0])
        counts[0] += 1
        if account.is_template:
            counts[1] += 1
            messages.append(MessageEstimate(index=index, parts=None, encoding=None, ucs2_chars=[]))
            continue
        text = message.text if message.text is not None else job.text
        counts[1] += _count(index, text, messages, by_encoding, forcing, both)
    breakdown = {
        name: AccountEstimate(
            messages=recipients,
            parts=None if accounts[name].is_template else parts,
            cost=_cost(accounts[name], parts),
            currency=accounts[name].currency if accounts[name].price_per_part is not None else None,
        )
        for name, (recipients, parts) in sent.items()
    }
    costs = list(breakdown.values())
    currencies = {each.currency for each in costs}
    priced = all(each.cost is not None for each in costs) and len(currencies) == 1
    any_template = any(accounts[name].is_template for name in sent)
    return Estimate(
        provider=route.name,
        template=bool(sent) and all(accounts[name].is_template for name in sent),
        messages=messages,
        total=EstimateTotal(
            messages=len(messages),
            parts=None if any_template else sum(t.parts for t in by_encoding.values()),
            by_encoding=by_encoding,
            ucs2_chars=list(forcing),
            # One sum only in one currency, and only when every account is priced.
            cost=format(sum(Decimal(each.cost or 0) for each in costs), "f") if priced else None,
            currency=currencies.pop() if priced else None,
        ),
        accounts=breakdown,
        transliteration=both.estimate(),
    )


def _count(
    index: int,
    text: str | None,
    messages: list[MessageEstimate],
    by_encoding: dict[Encoding, EncodingTotal],
    forcing: dict[str, None],
    both: _Both,
) -> int:
    """Count one message's text, as the job sends it, into the estimate's
    lists; its parts."""
    counted = count_parts(both.count(text or ""))
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
    return counted.parts


def _text_estimate(job: Job, account: AccountInfo) -> Estimate:
    messages: list[MessageEstimate] = []
    by_encoding: dict[Encoding, EncodingTotal] = {}
    forcing: dict[str, None] = {}
    both = _Both(job.transliterate)
    for index, message in enumerate(job.messages):
        text = message.text if message.text is not None else job.text
        # validate_job (JobCheck) refuses a message without a text for a non-template account.
        _count(index, text, messages, by_encoding, forcing, both)
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
        transliteration=both.estimate(),
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
        transliteration=_Both(job.transliterate).estimate(),
    )


def _cost(account: AccountInfo, parts: int) -> str | None:
    if account.price_per_part is None:
        return None
    return format(account.price_per_part * Decimal(parts), "f")
