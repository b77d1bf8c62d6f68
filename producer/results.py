"""Outcome records as JSON Lines or CSV, in batches: the one writer of both
the API's streams, ``smsbulk results`` and the demo's results file.

JSON Lines are exact (one ``model_dump_json()`` a line). CSV has the Outcome
fields as columns, and a cell that a spreadsheet would run as a formula
(beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is
written with a leading ``'``, unless it is a phone number in ``+digits`` form.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from itertools import islice
from typing import NamedTuple, Protocol, TextIO

from producer.job import Outcome

BATCH_RECORDS = 500
OUTCOME_FIELDS = list(Outcome.model_fields)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PHONE = re.compile(r"\+[0-9]+")
MEDIA_TYPES = {
    "jsonl": "application/jsonl; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
}


class Encoder(Protocol):
    def header(self) -> str: ...

    def encode(self, outcomes: list[Outcome]) -> str: ...


class JsonLines:
    def header(self) -> str:
        return ""

    def encode(self, outcomes: list[Outcome]) -> str:
        return "".join(outcome.model_dump_json() + "\n" for outcome in outcomes)


def csv_cell(value: object) -> object:
    """A cell as a spreadsheet will read it as text, never as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _PHONE.fullmatch(value):
        return "'" + value
    return value


class Csv:
    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer)

    def _take(self) -> str:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text

    def header(self) -> str:
        self._writer.writerow(OUTCOME_FIELDS)
        return self._take()

    def encode(self, outcomes: list[Outcome]) -> str:
        self._writer.writerows(
            [csv_cell(value) for value in outcome.model_dump(mode="json").values()]
            for outcome in outcomes
        )
        return self._take()


ENCODERS: dict[str, type[Encoder]] = {"jsonl": JsonLines, "csv": Csv}


def write_results(outcomes: Iterator[Outcome], out: TextIO, fmt: str) -> int:
    """The records as ``fmt`` (jsonl or csv) to a file: ``smsbulk results``
    and the demo."""
    encoder = ENCODERS[fmt]()
    out.write(encoder.header())
    count = 0
    while records := list(islice(outcomes, BATCH_RECORDS)):
        out.write(encoder.encode(records))
        count += len(records)
    return count


class Batch(NamedTuple):
    data: bytes
    records: int


def next_batch(outcomes: Iterator[Outcome], encoder: Encoder) -> Batch | None:
    """The next records, encoded; None once the job is exhausted. Runs in a
    pool thread: reading the records is blocking Redis I/O."""
    records = list(islice(outcomes, BATCH_RECORDS))
    return Batch(encoder.encode(records).encode(), len(records)) if records else None
