"""Send windows through real worker processes, a real Valkey and the sandbox.

One window, "opening a minute or two from now in Nairobi and open for 20
hours", read in each recipient's own time: Kenyan numbers wait for it (the
sandbox's clock records none before it opens, all after), New York numbers,
for which it is open already (New York is 7 or 8 hours behind), go at once.
A job whose validity ends before the window opens expires, never sent. A
job whose window opens hours from now has its chunk parked: one pass, then
nothing until then (no pass every countdown).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from producer.core import keys
from tests.integration.stack import Stack, own_server_stack
from tests.integration.test_rate_limits import results

pytestmark = pytest.mark.integration

NAIROBI = ZoneInfo("Africa/Nairobi")


def kenya(count: int, start: int = 0) -> list[str]:
    return [f"+25471{2000000 + start + i:07d}" for i in range(count)]


def new_york(count: int) -> list[str]:
    return [f"+1212555{i:04d}" for i in range(count)]


def next_opening() -> datetime:
    """A whole minute, 75 to 135 seconds from now, in Nairobi."""
    at = datetime.now(NAIROBI) + timedelta(seconds=135)
    return at.replace(second=0, microsecond=0)


def hhmm(at: datetime) -> str:
    return at.strftime("%H:%M")


def submit(stack: Stack, job: dict[str, Any]) -> str:
    producer = stack.producer()
    try:
        return producer.submit(job)
    finally:
        producer.close()


def job(numbers: list[str], window: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "provider": "bulk",
        "text": "Your appointment is tomorrow at 10:00.",
        "send_window": window,
        "messages": [{"to": n} for n in numbers],
        **extra,
    }


@pytest.mark.timeout(300)
def test_each_recipient_is_sent_only_inside_the_window_in_its_own_local_time(
    tmp_path: Path,
) -> None:
    opens = next_opening()
    window = {"start": hhmm(opens), "end": hhmm(opens + timedelta(hours=20))}
    later = datetime.now(NAIROBI) + timedelta(hours=3)
    closed = {"start": hhmm(later), "end": hhmm(later + timedelta(hours=1))}
    kenyan, american = kenya(300), new_york(200)
    with own_server_stack(tmp_path / "stack", workers=2) as stack:
        both = submit(stack, job(kenyan + american, window))
        expiring = submit(stack, job(kenya(50, 1000), window, validity_minutes=1))
        parked = submit(stack, job(kenya(20, 2000), closed))
        assert stack.wait_for(expiring, timeout_s=150).state == "completed"
        done = stack.wait_for(both, timeout_s=240)
        assert done.state == "completed" and done.counts["accepted"] == 500
        client = stack.redis()
        parked_score = client.zscore(keys.PARKED, keys.parked(parked, 0))
        parked_status = stack.producer().status(parked)
        rows = stack.sandbox_get("/_sandbox/sent?kind=sendbulk")
        stats = stack.sandbox_get("/_sandbox/stats")
        expired = results(stack, expiring)
        logs = stack.worker_logs()
        stack.producer().cancel(parked)

    sent_at = {row["number"]: row["t"] for row in rows}
    assert stats["duplicates"] == 0
    kenyan_times = [sent_at[n[1:]] for n in kenyan]
    american_times = [sent_at[n[1:]] for n in american]
    opens_s = opens.timestamp()
    # None of Nairobi's before its window opened, by the sandbox's clock; all after.
    assert min(kenyan_times) >= opens_s, min(kenyan_times) - opens_s
    # New York's window was open: sent at once, before Nairobi's opened.
    assert max(american_times) < opens_s
    # Validity ended before the window opened: expired, never sent.
    assert {r.status for r in expired} == {"expired"}
    assert not any(n[1:] in sent_at for n in kenya(50, 1000))
    # Hours away: parked once, for when it opens (3 h, less the minute's seconds).
    assert parked_status.counts["pending"] == 20 and parked_status.state == "running"
    assert parked_score is not None and 2.9 * 3600 < parked_score - time.time() < 3.1 * 3600
    assert not any(n[1:] in sent_at for n in kenya(20, 2000))
    passes = [
        line for line in logs.splitlines() if "recipients_outside_window" in line and parked in line
    ]
    assert len(passes) == 1, passes
