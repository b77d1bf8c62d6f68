"""Duplicate suppression (``dedupe_minutes``) through real worker processes,
a real Valkey and the sandbox: the same 5,000-recipient reminder submitted
twice, a second apart, as two jobs, reaches every number exactly once.

Either job's request may claim a number first (the second's chunks can be
sent before the first's last ones), so the guarantee checked is the union:
for each number one record is ``accepted`` and the other ``rejected``,
naming the send it duplicates, and the sandbox recorded the number once.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack import Stack, own_server_stack, ro_numbers
from tests.integration.test_rate_limits import results

pytestmark = pytest.mark.integration

RECIPIENTS = 5_000
WINDOW_MINUTES = 60
DUPLICATE = re.compile(
    rf"duplicate of an earlier send within {WINDOW_MINUTES} minutes \(job (\S+), message (\d+)\)"
)


def reminder(numbers: list[str]) -> dict[str, Any]:
    return {
        "provider": "bulk",
        "text": "Reminder: your appointment is tomorrow at 10:00.",
        "dedupe_minutes": WINDOW_MINUTES,
        "messages": [{"to": n} for n in numbers],
    }


def submit(stack: Stack, job: dict[str, Any]) -> str:
    producer = stack.producer()
    try:
        return producer.submit(job)
    finally:
        producer.close()


@pytest.mark.timeout(240)
def test_the_same_reminder_submitted_twice_reaches_every_number_exactly_once(
    tmp_path: Path,
) -> None:
    numbers = ro_numbers(RECIPIENTS)
    with own_server_stack(tmp_path / "stack", workers=2) as stack:
        first = submit(stack, reminder(numbers))
        time.sleep(1)
        second = submit(stack, reminder(numbers))
        assert first != second
        for job_id in (first, second):
            assert stack.wait_for(job_id, timeout_s=150).state == "completed"
        records = {job_id: results(stack, job_id) for job_id in (first, second)}
        rows = stack.sandbox_get("/_sandbox/sent?kind=sendbulk")
        stats = stack.sandbox_get("/_sandbox/stats")

    # The sandbox's record: every number once, none twice.
    sent = Counter(row["number"] for row in rows)
    assert stats["duplicates"] == 0
    assert sent == Counter("4" + n for n in numbers)

    # Each number: one record accepted, the other rejected naming it.
    other = {first: second, second: first}
    for index in range(RECIPIENTS):
        pair = {job_id: records[job_id][index] for job_id in (first, second)}
        accepted = [j for j, r in pair.items() if r.status == "accepted"]
        assert len(accepted) == 1, (index, pair)
        rejected = pair[other[accepted[0]]]
        assert rejected.status == "rejected", (index, rejected)
        named = DUPLICATE.fullmatch(rejected.error or "")
        assert named is not None, rejected.error
        assert named.groups() == (accepted[0], str(index))
    second_rejected = sum(r.status == "rejected" for r in records[second])
    print(f"second job: {second_rejected} of {RECIPIENTS} rejected as duplicates")
