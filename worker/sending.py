"""One pass over a chunk: recover, prepare, group, send, record.

A chunk's provider requests are recorded pending -> sending -> done. A pass
first settles requests a killed worker left in ``sending`` (the job's
delivery policy decides: ``unknown`` under at_most_once, sent again under
at_least_once), then sends every recipient that is still pending. It
returns the delay before the next pass if some recipients failed retryably.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from producer.store import StoredOutcome, now_s
from worker.chunking import chunk_range
from worker.config import Account
from worker.logs import get_logger
from worker.providers.base import Adapter, JobContext, Recipient, RecipientResult, Verdict
from worker.recipients import prepare
from worker.results_store import ChunkData, JobSpec, ResultsStore, new_token
from worker.retry import retry_delay_s

FINAL = frozenset({"accepted", "rejected", "failed", "expired", "cancelled", "unknown"})
REQUESTS_IN_FLIGHT_PER_CHUNK = 4


@dataclass(slots=True)
class PassResult:
    retry_in_s: float | None = None
    sent_requests: int = 0
    recipients: int = 0
    notes: list[str] = field(default_factory=list)


def deadline_s(job: JobSpec) -> float | None:
    minutes = job.spec.get("validity_minutes")
    if not minutes:
        return None
    start = job.spec.get("schedule_at")
    from datetime import datetime

    start_s = datetime.fromisoformat(start).timestamp() if start else job.created_at
    return float(start_s + minutes * 60)


def _outcome(
    status: str, previous: StoredOutcome | None, *, e164: str | None, **fields: Any
) -> StoredOutcome:
    attempts = fields.pop("attempts", previous.attempts if previous else 0)
    return StoredOutcome(status, e164=e164, attempts=attempts, updated_at=now_s(), **fields)


async def fail_chunk(store: ResultsStore, job: JobSpec, chunk_no: int, reason: str) -> None:
    """Fail every pending recipient of a chunk that cannot be sent at all."""
    indices = chunk_range(chunk_no, job.total, job.chunk_size)
    data = await store.chunk(job.job_id, chunk_no, indices)
    failed = {
        i: _outcome("failed", out, e164=out.e164 if out else None, error=reason)
        for i, _ in data.messages
        if (out := data.outcomes.get(i)) is None or out.status not in FINAL
    }
    await store.commit(job.job_id, chunk_no, failed)


class ChunkSender:
    def __init__(
        self, store: ResultsStore, adapter: Adapter, job: JobSpec, chunk_no: int, cap_s: float
    ) -> None:
        self.store = store
        self.adapter = adapter
        self.account: Account = adapter.account
        self.job = job
        self.chunk_no = chunk_no
        self.cap_s = cap_s
        self.at_most_once = job.spec.get("delivery_policy", "at_most_once") == "at_most_once"
        self.context = JobContext(
            job_id=job.job_id,
            template_id=job.spec.get("template_id"),
            schedule_at=job.spec.get("schedule_at"),
            validity_minutes=job.spec.get("validity_minutes"),
        )
        self.log = get_logger(job_id=job.job_id, chunk=chunk_no, provider=self.account.name)

    async def run(self, session: Any) -> PassResult:
        indices = chunk_range(self.chunk_no, self.job.total, self.job.chunk_size)
        data = await self.store.chunk(self.job.job_id, self.chunk_no, indices)
        await self._settle_interrupted(data)
        pending = [
            (i, message)
            for i, message in data.messages
            if (out := data.outcomes.get(i)) is None or out.status not in FINAL
        ]
        result = PassResult()
        if not pending:
            return result
        deadline = deadline_s(self.job)
        if deadline is not None and now_s() > deadline:
            expired = {
                i: _outcome("expired", data.outcomes.get(i), e164=None, error="validity passed")
                for i, _ in pending
            }
            await self.store.commit(self.job.job_id, self.chunk_no, expired)
            return result
        recipients, rejections = prepare(
            self.adapter, pending, self.job.spec.get("text"), self.job.spec.get("sender")
        )
        if rejections:
            rejected = {
                r.index: _outcome(
                    "rejected",
                    data.outcomes.get(r.index),
                    e164=r.e164,
                    segments=r.segments,
                    error=r.reason,
                )
                for r in rejections
            }
            await self.store.commit(self.job.job_id, self.chunk_no, rejected)
        batches = self.adapter.group(recipients)
        request_ids = [new_token()[:16] for _ in batches]
        await self.store.set_requests(
            self.job.job_id,
            self.chunk_no,
            {
                rid: {"s": "pending", "i": [r.index for r in b]}
                for rid, b in zip(request_ids, batches, strict=True)
            },
        )
        gate = asyncio.Semaphore(REQUESTS_IN_FLIGHT_PER_CHUNK)

        async def one(request_id: str, batch: list[Recipient]) -> float | None:
            async with gate:
                return await self._send(session, request_id, batch, data)

        delays = await asyncio.gather(
            *(one(rid, b) for rid, b in zip(request_ids, batches, strict=True))
        )
        waits = [d for d in delays if d is not None]
        result.retry_in_s = max(waits) if waits else None
        result.sent_requests = len(batches)
        result.recipients = len(recipients)
        return result

    async def _settle_interrupted(self, data: ChunkData) -> None:
        """Requests left in ``sending`` by a worker that died mid-request."""
        for request_id, state in data.requests.items():
            if state.get("s") != "sending":
                continue
            policy_outcomes: dict[int, StoredOutcome] = {}
            for index in state["i"]:
                previous = data.outcomes.get(index)
                if previous is not None and previous.status in FINAL:
                    continue
                attempts = max(state.get("a", 1), previous.attempts if previous else 0)
                if self.at_most_once:
                    outcome = _outcome(
                        "unknown",
                        previous,
                        e164=previous.e164 if previous else None,
                        attempts=attempts,
                        error_code="interrupted",
                        error="the worker stopped while the request was in flight",
                    )
                else:
                    outcome = _outcome(
                        "pending",
                        previous,
                        e164=previous.e164 if previous else None,
                        attempts=attempts,
                        error_code="interrupted",
                        error="the worker stopped while the request was in flight; sending again",
                    )
                policy_outcomes[index] = outcome
                data.outcomes[index] = outcome
            done = {"s": "done", "a": state.get("a", 1), "t": now_s(), "interrupted": True}
            await self.store.commit(
                self.job.job_id, self.chunk_no, policy_outcomes, request_id, state["k"], done
            )
            self.log.warning(
                "interrupted_request_settled",
                request=request_id,
                recipients=len(state["i"]),
                policy=self.job.spec.get("delivery_policy"),
            )

    async def _send(
        self, session: Any, request_id: str, batch: list[Recipient], data: ChunkData
    ) -> float | None:
        attempt = 1 + max(
            (data.outcomes[r.index].attempts if r.index in data.outcomes else 0) for r in batch
        )
        token = new_token()
        await self.store.set_requests(
            self.job.job_id,
            self.chunk_no,
            {
                request_id: {
                    "s": "sending",
                    "a": attempt,
                    "t": now_s(),
                    "k": token,
                    "i": [r.index for r in batch],
                }
            },
        )
        sent = await self.adapter.send(session, batch, self.context)
        outcomes: dict[int, StoredOutcome] = {}
        retry_wanted = False
        for recipient, result in zip(batch, sent.results, strict=True):
            outcome = self._outcome_for(recipient, result, attempt)
            retry_wanted |= outcome.status == "pending"
            outcomes[recipient.index] = outcome
        done = {"s": "done", "a": attempt, "t": now_s(), "http": sent.http_status}
        state = await self.store.commit(
            self.job.job_id, self.chunk_no, outcomes, request_id, token, done
        )
        if state == "fenced":
            self.log.warning("request_fenced", request=request_id)
        self.log.info(
            "provider_request",
            request=request_id,
            recipients=len(batch),
            attempt=attempt,
            http_status=sent.http_status,
            job_state=state,
        )
        if not retry_wanted:
            return None
        return retry_delay_s(
            attempt,
            self.account.retry_base_s,
            self.account.retry_max_s,
            sent.retry_after_s,
            self.cap_s,
        )

    def _outcome_for(
        self, recipient: Recipient, result: RecipientResult, attempt: int
    ) -> StoredOutcome:
        verdict = result.verdict
        if verdict is Verdict.UNCERTAIN and self.at_most_once:
            status = "unknown"
        elif verdict in (Verdict.RETRY, Verdict.UNCERTAIN):
            status = "pending" if attempt < self.account.max_attempts else "failed"
        else:
            status = str(verdict)
        error = result.error
        if status == "failed" and verdict is not Verdict.FAILED:
            error = f"gave up after {attempt} attempts: {error}"
        cost, currency = result.cost, result.currency
        if status == "accepted" and cost is None and self.account.price_per_part is not None:
            cost = str(self.account.price_per_part * Decimal(recipient.cost_parts))
        if cost is not None and currency is None:
            currency = self.account.currency
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
