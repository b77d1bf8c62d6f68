"""A pass over a chunk, through real worker processes, a real Valkey and
the sandbox: a request whose answer makes the adapter raise never leaves
sends behind it, and a saturated account's deferred chunks leave the
workers to other accounts' jobs.

Every stack is the test's own (sandbox and workers); every wait is on a
condition with a time limit.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from producer.core import keys
from tests.integration.stack import Stack, add_provider_accounts, elapsed, make_stack, ro_numbers
from tests.integration.test_rate_limits import results
from worker.background.watchdog import KOMBU_UNACKED, parse_task
from worker.dev.launcher import wait_until

pytestmark = pytest.mark.integration

RECOVERY_S = 30  # task retries and deferrals at most 6 s apart (worker/ops/timing.py)
SETTINGS = f"\n[settings]\nrecovery_s = {RECOVERY_S}\n"


def submit(stack: Stack, job: dict[str, Any]) -> str:
    producer = stack.producer()
    try:
        return producer.submit(job)
    finally:
        producer.close()


# --- a request that raises in the adapter ----------------------------------------------

POISONED_JOB = 300
POISON_BATCH = 50  # chunks of 50 recipients: 50 requests each, one number apiece


@pytest.mark.timeout(240)
def test_an_answer_that_raises_in_the_adapter_is_unknown_and_nothing_is_sent_twice(
    redis_url: str, tmp_path: Path
) -> None:
    # Each recipient its own text: voipcomm sends one request per recipient,
    # so a chunk is 50 requests, 4 of them in flight at a time. About every
    # 7th answer is JSON nested 200,000 deep, on which json.loads raises
    # RecursionError inside the adapter.
    stack = make_stack(redis_url, tmp_path / "stack", workers=0, settings_toml=SETTINGS)
    try:
        add_provider_accounts(stack, ["voipcomm"])
        with stack.config.open("a") as config:
            config.write(f"batch_size = {POISON_BATCH}\n")  # the voipcomm table is the last
        stack.add_worker()
        stack.add_worker()
        stack.sandbox_post("/_sandbox/settings", {"deep_rate": 1 / 7, "seed": 7})
        numbers = ro_numbers(POISONED_JOB)
        started = time.monotonic()
        job_id = submit(
            stack,
            {
                "provider": "voipcomm",
                "messages": [
                    {"to": n, "text": f"Your code is {i:04d}"} for i, n in enumerate(numbers)
                ],
            },
        )
        status = stack.wait_for(job_id, timeout_s=150)
        took_s = elapsed(started)
        outcomes = results(stack, job_id)
        stats = stack.sandbox_get("/_sandbox/stats")
        rows = stack.sandbox_get("/_sandbox/sent?kind=voipcomm")
    finally:
        stack.stop()

    sent = Counter(row["number"] for row in rows)
    ids = {row["number"]: row["message_id"] for row in rows}
    twice = [number for number, n in sent.items() if n > 1]
    by_status = Counter(o.status for o in outcomes)
    print(
        f"\n{POISONED_JOB} recipients, one request each: {took_s:.1f} s, {dict(by_status)}; "
        f"sandbox requests {stats['requests']}, too-deep answers {stats['deep_answers']}, "
        f"numbers sent more than once {len(twice)}"
    )
    assert status.state == "completed" and status.counts["pending"] == 0
    assert twice == []  # at_most_once: no number is ever posted twice
    assert stats["requests"] == POISONED_JOB
    assert stats["deep_answers"] > 0
    # The answers the adapter could not read, and only they, are unknown;
    # every other recipient is accepted with the id the sandbox gave it.
    assert by_status == {
        "unknown": stats["deep_answers"],
        "accepted": POISONED_JOB - stats["deep_answers"],
    }
    for outcome in outcomes:
        number = "4" + numbers[outcome.index]
        if outcome.status == "accepted":
            assert outcome.provider_message_id == ids[number]
        assert sent[number] == 1 and outcome.attempts == 1


# --- a saturated account's deferred chunks ---------------------------------------------

SATURATED_CHUNKS = 200
SATURATED_CHUNK = 100  # recipients a chunk: at most one part a request, so 100 requests
# One part a second: after the first second every chunk waits for capacity,
# and (a refusal takes nothing) every chunk refused between two sends is told
# to come back at the same instant.
SATURATED = {"messages_per_second": 1, "requests_per_second": 1, "burst_s": 1}
POOL_PROCESSES = 4  # two workers of two
RATE_WINDOW_S = 10
CODES = 5  # one-time codes, one after the other: some land when chunks come back


def deferred_chunk_tasks(client: redis.Redis, job_id: str) -> tuple[int, int]:
    """(chunk tasks of the job waiting for their countdown, others) on the
    queues and among the workers' unacknowledged (reserved) messages."""
    raws = cast(list[bytes], client.hvals(KOMBU_UNACKED))
    for queue in keys.WORKER_QUEUES:
        raws += cast(list[bytes], client.lrange(queue, 0, -1))
    deferred = other = 0
    for raw in raws:
        parsed = parse_task(raw)
        if parsed is None or parsed[0] != keys.SEND_CHUNK or parsed[1] != job_id:
            continue
        message = json.loads(raw)
        message = message[0] if isinstance(message, list) else message
        if message["headers"].get("eta"):
            deferred += 1
        else:
            other += 1
    return deferred, other


def chunk_task_seconds(stack: Stack, start: float, end: float) -> float:
    """Pool time taken by send_chunk tasks that ended between ``start`` and
    ``end`` (epoch seconds), from the workers' Celery log lines."""
    total = 0.0
    for line in stack.worker_logs().splitlines():
        if not line.startswith("{") or "smsbulk.send_chunk[" not in line:
            continue
        record = json.loads(line)
        found = re.search(r"succeeded in ([0-9.]+)s", record.get("event", ""))
        ended = datetime.fromisoformat(record["timestamp"]).timestamp()
        if found and start <= ended <= end:
            total += float(found.group(1))
    return total


@pytest.mark.timeout(300)
def test_a_one_time_code_is_sent_within_2_s_while_another_account_has_200_chunks_deferred(
    redis_url: str, tmp_path: Path
) -> None:
    # Four pool processes (two workers), default timing (recovery_s 300).
    accounts: dict[str, dict[str, object]] = {
        "saturated": {**SATURATED, "batch_size": SATURATED_CHUNK},
        "codes": {"messages_per_second": 1000, "requests_per_second": 100},
    }
    stack = make_stack(redis_url, tmp_path / "stack", workers=0, accounts=accounts)
    for _ in range(POOL_PROCESSES // 2):
        stack.add_worker(concurrency=2)
    try:
        client = stack.redis()
        slow_id = submit(
            stack,
            {
                "provider": "saturated",
                "text": "Our sale ends tonight.",
                "messages": [{"to": n} for n in ro_numbers(SATURATED_CHUNKS * SATURATED_CHUNK)],
            },
        )

        def sent() -> int:
            return int(stack.sandbox_get("/_sandbox/stats")["items"])

        wait_until(lambda: sent() >= 1, 60, "the saturated account's first send", 0.2)
        # Then until (nearly) every chunk of it waits for its countdown, for at most 60 s.
        deadline = time.monotonic() + 60
        deferred, other = deferred_chunk_tasks(client, slow_id)
        while deferred < SATURATED_CHUNKS - 20 and time.monotonic() < deadline:
            time.sleep(0.2)
            deferred, other = deferred_chunk_tasks(client, slow_id)
        slow_sent_before = sent()
        window = [time.time()]
        took_s: list[float] = []
        for n in range(CODES):
            submitted = time.monotonic()
            code_id = submit(
                stack,
                {
                    "provider": "codes",
                    "text": f"Your code is {4321 + n}",
                    "priority": "high",
                    "messages": [{"to": ro_numbers(1, start=900_000 + n)[0]}],
                },
            )
            assert stack.wait_for(code_id, timeout_s=120).counts["accepted"] == 1
            took_s.append(elapsed(submitted))
        window.append(time.time())
        slow_status = stack.producer().status(slow_id)
        slow_sent = sent() - slow_sent_before - CODES
        # Meanwhile the saturated account keeps its rate: deferred chunks
        # come back often enough to take every second's part.
        rate_from, rate_start = sent(), time.monotonic()
        wait_until(lambda: elapsed(rate_start) >= RATE_WINDOW_S, RATE_WINDOW_S + 5, "a while")
        slow_rate = (sent() - rate_from) / elapsed(rate_start)
        busy = chunk_task_seconds(stack, window[0], window[1]) / (
            (window[1] - window[0]) * POOL_PROCESSES
        )
        client.close()
    finally:
        stack.stop()

    print(
        f"\n{CODES} one-time codes on another account, one after the other: completed "
        f"{', '.join(f'{t:.2f}' for t in took_s)} s after submission; the saturated "
        f"account's chunks before: {deferred} deferred, {other} queued or running "
        f"({slow_sent} recipients of it sent meanwhile; its job then {slow_status.counts}); "
        f"chunk tasks kept the pool {busy:.0%} busy meanwhile; the saturated account then "
        f"sent {slow_rate:.2f}/s over {RATE_WINDOW_S} s (its limit: 1/s)"
    )
    assert deferred >= SATURATED_CHUNKS - 20
    assert max(took_s) < 2.0
    assert busy < 0.5  # the saturated account's chunks leave the processes free (was ~100 %)
    assert slow_status.state == "running"
    assert slow_rate >= 0.75
