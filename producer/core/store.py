"""How a job lives in Redis: shared by the producer (writes the job, reads
status and results) and the workers (read messages, write outcomes).

Layout (key names in ``producer.core.keys``):
- ``job:{id}`` hash: ``spec`` (the job without its messages, JSON), ``state``,
  ``total``, ``created_at``, ``finished_at``, ``chunk_size`` (set when
  planned), ``run`` (how many retries have restarted it; absent = 0),
  while a retry's reset is owed ``retry`` (the status codes to reset) and
  ``retry_next`` (the first block not reset yet; ``producer.control``), and
  one counter ``n:{code}`` per final status (codes in STATUS_CODES).
  Pending = total - sum of the counters. A job with ``max_cost``:
  ``cost_spent`` (millionths reserved by its requests; ``producer.core.money``),
  ``cost_cap`` (millionths, once a resume set a new cap; else the spec's), and
  ``pause_reason`` (``max_cost``) once its cap paused it, until resumed.
- ``job:{id}:m:{block}`` string: the block's messages as a JSON array of
  compact tuples ``[to, text, params, ref]`` (trailing nulls dropped).
- ``job:{id}:o:{block}`` hash: message index -> compact outcome tuple.
  A message without an entry is pending and has never been attempted.
- ``job:{id}:done`` bitmap: bit ``chunk`` set once the chunk has nothing
  left to send (read by the workers' watchdog, cleared by a retry; only a
  pass of the job's current ``run`` sets a bit).
- ``upload:{token}:m:{block}`` string, expiring: a block of a job still being
  submitted, renamed to ``job:{id}:m:{block}`` when the job is committed
  (``producer.submission``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple, cast

import orjson
import redis

from producer.core import keys
from producer.core.money import decimal_string, micros
from producer.job import FINAL_STATUSES, JobStatus, Message, Outcome, OutcomeStatus

STATUS_CODES: dict[str, str] = {
    "pending": "p",
    "accepted": "a",
    "rejected": "r",
    "failed": "f",
    "expired": "e",
    "cancelled": "c",
    "unknown": "u",
}
STATUS_NAMES: dict[str, OutcomeStatus] = {code: name for name, code in STATUS_CODES.items()}  # type: ignore[misc]
ALL_STATUSES: tuple[str, ...] = tuple(STATUS_CODES)


def _dumps(value: object) -> str:
    """Compact JSON, as json.dumps(separators=(",", ":"), ensure_ascii=False)
    writes it, at a ninth of the cost: orjson, because a 1,000-recipient
    chunk encodes 1,000 outcomes (7.6 µs each with json, 0.9 with orjson)."""
    return orjson.dumps(value).decode()


class StoredMessage(NamedTuple):
    to: str
    text: str | None = None
    params: list[str] | None = None
    ref: str | None = None


class StoredOutcome(NamedTuple):
    """The mutable part of an outcome record; the rest comes from the message."""

    status: str  # one of STATUS_CODES' keys
    e164: str | None = None
    provider_message_id: str | None = None
    segments: int | None = None
    cost: str | None = None
    currency: str | None = None
    error_code: str | None = None
    error: str | None = None
    attempts: int = 0
    updated_at: float | None = None
    # Route jobs only (None otherwise, and then not stored): the account the
    # recipient is on (the one that sent it, once final), and how many of its
    # attempts were made on earlier accounts of its list.
    account: str | None = None
    since: int | None = None


def _trim(values: Iterable[Any]) -> list[Any]:
    out = list(values)
    while out and out[-1] is None:
        out.pop()
    return out


def encode_block(messages: Iterable[Message]) -> str:
    return _dumps([_trim((m.to, m.text, m.params, m.ref)) for m in messages])


def decode_block(raw: bytes | str) -> list[StoredMessage]:
    return [StoredMessage(*item) for item in orjson.loads(raw)]


def encode_outcome(outcome: StoredOutcome) -> str:
    values = list(outcome)
    values[0] = STATUS_CODES[outcome.status]
    return _dumps(_trim(values))


def decode_outcome(raw: bytes | str) -> StoredOutcome:
    values = orjson.loads(raw)
    values[0] = STATUS_NAMES[values[0]]
    return StoredOutcome(*values)


def block_of(index: int) -> int:
    return index // keys.BLOCK_SIZE


def block_count(total: int) -> int:
    return -(-total // keys.BLOCK_SIZE)


def iso(epoch_s: float | None) -> datetime | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC)


def now_s() -> float:
    return time.time()


def status_from_hash(job_id: str, fields: Mapping[bytes, bytes]) -> JobStatus:
    total = int(fields[b"total"])
    counts = {
        name: int(fields.get(f"n:{STATUS_CODES[name]}".encode(), 0)) for name in FINAL_STATUSES
    }
    counts = {"pending": total - sum(counts.values()), **counts}
    spec = json.loads(fields[b"spec"])
    finished = fields.get(b"finished_at")
    state = fields[b"state"].decode()
    cap = cost_cap(fields, spec.get("max_cost"))
    reason = fields.get(b"pause_reason")
    return JobStatus(
        job_id=job_id,
        provider=spec["provider"],
        state=state,  # type: ignore[arg-type]
        total=total,
        counts=counts,
        accounts=_account_counts(fields, spec["provider"], counts),
        created_at=iso(float(fields[b"created_at"])),  # type: ignore[arg-type]
        finished_at=iso(float(finished)) if finished else None,
        max_cost=None if cap is None else decimal_string(cap),
        spent=None if cap is None else decimal_string(int(fields.get(b"cost_spent", 0))),
        pause_reason=reason.decode() if reason and state == "paused" else None,  # type: ignore[arg-type]
    )


def cost_cap(fields: Mapping[bytes, bytes], submitted: str | None) -> int | None:
    """A job's spend cap in millionths: a resume's (``cost_cap``), else the
    one it was submitted with; None for a job without one."""
    if submitted is None:
        return None
    raised = fields.get(b"cost_cap")
    return int(raised) if raised is not None else micros(Decimal(submitted), round_up=False)


def _account_counts(
    fields: Mapping[bytes, bytes], provider: str, counts: Mapping[OutcomeStatus, int]
) -> dict[str, dict[OutcomeStatus, int]]:
    """Final recipients per account: a route job's ``a:{account}:{code}``
    counters; a one-account job's own counters, under its account."""
    found: dict[str, dict[OutcomeStatus, int]] = {}
    for field, value in fields.items():
        if field.startswith(b"a:"):
            account, _, code = field[2:].decode().rpartition(":")
            name = STATUS_NAMES.get(code)
            if name in FINAL_STATUSES:
                found.setdefault(account, dict.fromkeys(FINAL_STATUSES, 0))[name] = int(value)
    if found:
        return found
    return {provider: {name: counts[name] for name in FINAL_STATUSES}}


def read_status(client: redis.Redis, job_id: str) -> JobStatus | None:
    fields = cast(Mapping[bytes, bytes], client.hgetall(keys.job(job_id)))
    return status_from_hash(job_id, fields) if fields else None


def outcome_record(
    job_id: str, provider: str, index: int, message: StoredMessage, stored: StoredOutcome | None
) -> Outcome:
    stored = stored or StoredOutcome("pending")
    return Outcome(
        job_id=job_id,
        index=index,
        to=message.to,
        ref=message.ref,
        provider=stored.account or provider,
        e164=stored.e164,
        status=stored.status,  # type: ignore[arg-type]
        provider_message_id=stored.provider_message_id,
        segments=stored.segments,
        cost=stored.cost,
        currency=stored.currency,
        error_code=stored.error_code,
        error=stored.error,
        attempts=stored.attempts,
        updated_at=iso(stored.updated_at),
    )


def iter_outcomes(
    client: redis.Redis, job_id: str, ref: str | None = None, blocks_per_read: int = 8
) -> Iterator[Outcome]:
    """Every outcome record of a job in index order, read a few blocks at a
    time so that a million-recipient job never sits in memory at once."""
    total_raw, spec_raw = cast(
        list[bytes | None], client.hmget(keys.job(job_id), ["total", "spec"])
    )
    if total_raw is None or spec_raw is None:
        return
    total, provider = int(total_raw), json.loads(spec_raw)["provider"]
    n_blocks = block_count(total)
    for first in range(0, n_blocks, blocks_per_read):
        numbers = range(first, min(first + blocks_per_read, n_blocks))
        pipe = client.pipeline(transaction=False)
        for block_no in numbers:
            pipe.get(keys.block(job_id, block_no))
            pipe.hgetall(keys.outcomes(job_id, block_no))
        replies = pipe.execute()
        for position, block_no in enumerate(numbers):
            raw_block, raw_outcomes = replies[2 * position], replies[2 * position + 1]
            if raw_block is None:
                continue  # expired by retention
            base = block_no * keys.BLOCK_SIZE
            for offset, message in enumerate(decode_block(raw_block)):
                if ref is not None and message.ref != ref:
                    continue
                raw = raw_outcomes.get(str(base + offset).encode())
                stored = decode_outcome(raw) if raw is not None else None
                yield outcome_record(job_id, provider, base + offset, message, stored)
