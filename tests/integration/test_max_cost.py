"""A spend cap (``max_cost``) through 4 real worker processes, a real Valkey
and the sandbox: a job whose cap allows about 60 % of it. What the sandbox
accepted (its parts x the price) never passes the cap; the job is paused
with ``pause_reason: "max_cost"`` and ``spent`` within the cap; a resume
with a higher cap finishes it, every recipient accepted, none twice.

The cap is reserved per request before it begins, in one script for every
worker, so the guarantee holds however the requests of the 8 processes
interleave; requests that had reserved but not begun when the job paused
give their cost back, so ``spent`` may end below the cap, never above.
"""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from producer.core import keys
from producer.job import JobStatus
from producer.parts import count_parts
from tests.integration.stack import Stack, own_server_stack, ro_numbers
from tests.integration.test_rate_limits import results
from worker.dev.launcher import wait_until

pytestmark = pytest.mark.integration

WORKERS = 4
RECIPIENTS = 500
PRICE = Decimal("0.05")
BATCH = 10  # recipients a request (and a chunk): 50 requests, reserved one by one
SHORT = "Your order has shipped."
LONG = "Your order has shipped. " * 8  # 192 characters: 2 parts
ACCOUNT = {
    "batch_size": BATCH,
    "price_per_part": float(PRICE),
    "currency": "EUR",
    "messages_per_second": 100000,
    "requests_per_second": 1000,
}


def campaign(numbers: list[str], max_cost: Decimal) -> dict[str, Any]:
    return {
        "provider": "priced",
        "max_cost": str(max_cost),
        "messages": [
            {"to": n, "text": LONG if i % 4 == 0 else SHORT} for i, n in enumerate(numbers)
        ],
    }


def sandbox_cost(stack: Stack) -> tuple[Decimal, list[dict[str, Any]]]:
    """What the sandbox accepted, priced: parts x price of every recipient it recorded."""
    rows = stack.sandbox_get("/_sandbox/sent?kind=sendbulk")
    return sum((count_parts(row["text"]).parts * PRICE for row in rows), Decimal(0)), rows


def status(stack: Stack, job_id: str) -> JobStatus:
    producer = stack.producer()
    try:
        return producer.status(job_id)
    finally:
        producer.close()


@pytest.mark.timeout(120)
def test_a_spend_cap_pauses_the_job_across_workers_and_a_higher_cap_finishes_it(
    tmp_path: Path,
) -> None:
    numbers = ro_numbers(RECIPIENTS)
    total_parts = sum(2 if i % 4 == 0 else 1 for i in range(RECIPIENTS))  # 625
    total_cost = total_parts * PRICE  # 31.25
    cap = (total_cost * Decimal("0.6")).quantize(Decimal("0.01"))  # 18.75
    with own_server_stack(
        tmp_path / "stack", workers=WORKERS, accounts={"priced": ACCOUNT}
    ) as stack:
        client = stack.redis()
        wait_until(lambda: client.zcard(keys.WORKERS) >= WORKERS, 60, "every worker up")
        producer = stack.producer()
        try:
            job_id = producer.submit(campaign(numbers, cap))

            # Paused by its cap, once every request that began is recorded.
            def paused_and_settled() -> bool:
                now = status(stack, job_id)
                cost, _ = sandbox_cost(stack)
                return (
                    now.state == "paused"
                    and now.spent is not None
                    and Decimal(now.spent) == cost
                    and now.counts["accepted"] == len(stack.sandbox_get("/_sandbox/sent"))
                )

            wait_until(paused_and_settled, 60, "the job paused by its cap", interval_s=0.2)
            paused = status(stack, job_id)
            cost, rows = sandbox_cost(stack)
            time.sleep(1.0)  # nothing more is sent while it is paused
            assert len(stack.sandbox_get("/_sandbox/sent")) == len(rows)
            assert paused.pause_reason == "max_cost"
            assert paused.max_cost == str(cap)
            assert cost <= cap
            assert Decimal(paused.spent or "") <= cap
            assert 0 < paused.counts["accepted"] < RECIPIENTS
            assert paused.counts["pending"] == RECIPIENTS - paused.counts["accepted"]
            senders = {w.name for w in stack.workers if "provider_request" in w.output()}
            print(
                f"paused at {paused.spent} of {cap} EUR: {paused.counts['accepted']} of "
                f"{RECIPIENTS} accepted, by {len(senders)} workers"
            )

            resumed = producer.resume(job_id, str(total_cost + 1))
            assert resumed.pause_reason is None and resumed.state == "queued"
        finally:
            producer.close()
        done = stack.wait_for(job_id, timeout_s=60)
        cost, rows = sandbox_cost(stack)
        stats = stack.sandbox_get("/_sandbox/stats")
        records = results(stack, job_id)

    assert done.state == "completed" and done.pause_reason is None
    assert [r.status for r in records] == ["accepted"] * RECIPIENTS
    assert stats["duplicates"] == 0
    assert Counter(row["number"] for row in rows) == Counter("4" + n for n in numbers)
    assert cost == total_cost
    assert Decimal(done.spent or "") == total_cost
