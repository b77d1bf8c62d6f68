"""Turn stored messages into provider-ready recipients, or rejections.

Runs in the workers (parsing a million numbers costs ~35 CPU-seconds; the
submitting process must not pay it). Pure: no I/O.

A route job's recipient is sent through the account its number's country
picks (``Route.accounts_for``), the first of its list that is available, or
the one it had moved on to; a one-account job's through its account.

A recipient outside its send window (``clock``: its account's, for a job
or account with a window) is held back: neither sent nor recorded, counted
by the clock, which says when the soonest window opens.

A job with ``transliterate`` sends each text as ``producer.transliterate``
makes it, and counts its segments from that; without it no recipient pays
anything for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from producer.core.store import StoredMessage, StoredOutcome
from producer.parts import count_parts
from producer.phone import InvalidNumber, PhoneNumber, format_number, parse_number, time_zones
from producer.routes import Route
from producer.transliterate import transliterate as to_gsm
from worker.pipeline.outcomes import Place
from worker.pipeline.send_window import WindowClock
from worker.providers.base import Adapter, Recipient


@dataclass(slots=True)
class Rejection:
    index: int
    e164: str | None
    segments: int | None
    reason: str
    status: str = "rejected"  # "failed": its last account is stopped
    account: str | None = None  # route jobs: the account it stood on


def prepare(
    adapter: Adapter,
    indexed: list[tuple[int, StoredMessage]],
    default_text: str | None,
    job_sender: str | None,
    transliterate: bool = False,
    clock: WindowClock | None = None,
) -> tuple[list[Recipient], list[Rejection]]:
    """A one-account job's recipients to send now, and its rejections."""
    account = adapter.account
    sender = job_sender or account.sender
    recipients: list[Recipient] = []
    rejections: list[Rejection] = []
    for index, message in indexed:
        try:
            number = parse_number(message.to, account.default_region)
        except InvalidNumber as error:
            rejections.append(Rejection(index, None, None, str(error)))
            continue
        made: Recipient | Rejection | None
        made = _recipient(adapter, index, message, number, default_text, sender, transliterate)
        if isinstance(made, Recipient) and clock is not None:
            made = _in_window(clock, number, made)
        if isinstance(made, Rejection):
            rejections.append(made)
        elif made is not None:
            recipients.append(made)
    return recipients, rejections


def _in_window(
    clock: WindowClock, number: PhoneNumber, recipient: Recipient
) -> Recipient | Rejection | None:
    """The recipient if its window is open now; None if it is held back; a
    rejection if its window never opens in all its zones at once."""
    zones = time_zones(number)
    admitted = clock.admits(zones)
    if admitted is None:
        reason = clock.never_reason(zones)
        return Rejection(recipient.index, number.e164, recipient.segments, reason)
    return recipient if admitted else None


def _recipient(
    adapter: Adapter,
    index: int,
    message: StoredMessage,
    number: PhoneNumber,
    default_text: str | None,
    sender: str | None,
    transliterate: bool,
) -> Recipient | Rejection:
    account = adapter.account
    text = message.text if message.text is not None else default_text
    segments: int | None = None
    if not adapter.is_template:
        text = to_gsm(text or "") if transliterate else text or ""
        segments = count_parts(text).parts
        too_long = adapter.max_text_chars is not None and len(text) > adapter.max_text_chars
        if too_long or segments > account.max_parts:
            limit = (
                f"{adapter.max_text_chars} characters" if too_long else f"{account.max_parts} parts"
            )
            return Rejection(index, number.e164, segments, f"text too long: over {limit}")
    address = format_number(number, adapter.number_format, account.default_region)
    return Recipient(index, number.e164, address, text, message.params, sender, segments)


@dataclass(slots=True)
class Routed:
    """A route job's pending recipients, by the account each goes to now."""

    groups: dict[str, list[Recipient]] = field(default_factory=dict)
    places: dict[int, Place] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)
    held: list[int] = field(default_factory=list)  # every account of its list is unavailable
    held_on: set[str] = field(default_factory=set)  # the last accounts they wait for


def route(
    route_: Route,
    adapters: Mapping[str, Adapter],
    indexed: list[tuple[int, StoredMessage]],
    outcomes: Mapping[int, StoredOutcome],
    default_text: str | None,
    job_sender: str | None,
    stopped: Mapping[str, str],
    moving: frozenset[str] = frozenset(),
    holding: frozenset[str] = frozenset(),
    transliterate: bool = False,
    clocks: Mapping[str, WindowClock] | None = None,
) -> Routed:
    """Each recipient on the account it stands on (its previous outcome's,
    else the first of its list), moved on past accounts that cannot send
    now: ``stopped`` (bad credentials: account → reason) and ``moving``
    (circuit open, daily cap reached). Moving on uses no attempt. On its
    last account, a stopped one fails it; one of ``holding`` (cooling down,
    capped) holds it; any other sends (the probe of an open circuit). A recipient outside the
    send window of the account it would go through (``clocks``) is held back."""
    routed = Routed()
    for index, message in indexed:
        try:
            number = parse_number(message.to, route_.default_region)
        except InvalidNumber as error:
            routed.rejections.append(
                Rejection(index, None, None, str(error), account=route_.accounts[0])
            )
            continue
        names = route_.accounts_for(number.region)
        previous = outcomes.get(index)
        on = previous.account if previous is not None and previous.account in names else names[0]
        k = names.index(on)
        since = (previous.since or 0) if previous is not None and previous.account == on else 0
        attempts = previous.attempts if previous is not None else 0
        while (names[k] in stopped or names[k] in moving) and k + 1 < len(names):
            k, since = k + 1, attempts
        name = names[k]
        if name in stopped:
            routed.rejections.append(
                Rejection(index, number.e164, None, stopped[name], "failed", name)
            )
            continue
        if name in holding:
            routed.held.append(index)
            routed.held_on.add(name)
            continue
        adapter = adapters[name]
        made: Recipient | Rejection | None = _recipient(
            adapter,
            index,
            message,
            number,
            default_text,
            job_sender or adapter.account.sender,
            transliterate,
        )
        clock = clocks.get(name) if clocks else None
        if isinstance(made, Recipient) and clock is not None:
            made = _in_window(clock, number, made)
        if made is None:
            continue
        if isinstance(made, Rejection):
            made.account = name
            routed.rejections.append(made)
            continue
        routed.groups.setdefault(name, []).append(made)
        routed.places[index] = Place(names[k + 1] if k + 1 < len(names) else None, since)
    return routed
