"""Turn stored messages into provider-ready recipients, or rejections.

Runs in the workers (parsing a million numbers costs ~35 CPU-seconds; the
submitting process must not pay it). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from producer.core.store import StoredMessage
from producer.parts import count_parts
from worker.pipeline.phone import InvalidNumber, format_number, parse_number
from worker.providers.base import Adapter, Recipient


@dataclass(slots=True)
class Rejection:
    index: int
    e164: str | None
    segments: int | None
    reason: str


def prepare(
    adapter: Adapter,
    indexed: list[tuple[int, StoredMessage]],
    default_text: str | None,
    job_sender: str | None,
) -> tuple[list[Recipient], list[Rejection]]:
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
        text = message.text if message.text is not None else default_text
        segments: int | None = None
        if not adapter.is_template:
            text = text or ""
            segments = count_parts(text).parts
            too_long = adapter.max_text_chars is not None and len(text) > adapter.max_text_chars
            if too_long or segments > account.max_parts:
                limit = (
                    f"{adapter.max_text_chars} characters"
                    if too_long
                    else f"{account.max_parts} parts"
                )
                rejections.append(
                    Rejection(index, number.e164, segments, f"text too long: over {limit}")
                )
                continue
        address = format_number(number, adapter.number_format, account.default_region)
        recipients.append(
            Recipient(index, number.e164, address, text, message.params, sender, segments)
        )
    return recipients, rejections
