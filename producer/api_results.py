"""Outcome records as the bytes the API streams: JSON Lines or CSV, in batches.

The lines are the same as ``smsbulk results`` writes (one
``model_dump_json()`` a line; CSV with the Outcome fields as columns).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from itertools import islice
from typing import NamedTuple, Protocol

from producer.job import Outcome

BATCH_RECORDS = 500
OUTCOME_FIELDS = list(Outcome.model_fields)
MEDIA_TYPES = {
    "jsonl": "application/jsonl; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
}


class Encoder(Protocol):
    def header(self) -> bytes: ...

    def encode(self, outcomes: list[Outcome]) -> bytes: ...


class JsonLines:
    def header(self) -> bytes:
        return b""

    def encode(self, outcomes: list[Outcome]) -> bytes:
        return "".join(outcome.model_dump_json() + "\n" for outcome in outcomes).encode()


class Csv:
    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.DictWriter(self._buffer, fieldnames=OUTCOME_FIELDS)

    def _take(self) -> bytes:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text.encode()

    def header(self) -> bytes:
        self._writer.writeheader()
        return self._take()

    def encode(self, outcomes: list[Outcome]) -> bytes:
        self._writer.writerows(outcome.model_dump(mode="json") for outcome in outcomes)
        return self._take()


ENCODERS: dict[str, type[Encoder]] = {"jsonl": JsonLines, "csv": Csv}


class Batch(NamedTuple):
    data: bytes
    records: int


def next_batch(outcomes: Iterator[Outcome], encoder: Encoder) -> Batch | None:
    """The next records, encoded; None once the job is exhausted. Runs in a
    pool thread: reading the records is blocking Redis I/O."""
    records = list(islice(outcomes, BATCH_RECORDS))
    return Batch(encoder.encode(records), len(records)) if records else None
