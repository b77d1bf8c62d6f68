"""Providers that misbehave, through a real worker, Valkey and the sandbox.

A provider's ``Retry-After`` is honoured up to the account's ``retry_max_s``
(docs/INTERFACE.md, "Input limits"), and a provider closing kept-alive
connections while they are idle never turns a request into ``unknown``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.integration.stack import Stack, make_stack, ro_numbers
from worker.dev.launcher import wait_until

pytestmark = pytest.mark.integration

RETRY_MAX_S = 2.0
# Workers' start-up, a plan and a commit under a loaded CI machine: generous,
# yet far below what an uncapped Retry-After costs (the job never ends).
SLACK_S = 8.0


@pytest.fixture(scope="module")
def stack(valkey: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    url = valkey.connection_url  # type: ignore[attr-defined]
    redis.Redis.from_url(url).flushall()
    capped = {
        "retry_max_s": RETRY_MAX_S,
        "retry_base_s": 0.1,
        "messages_per_second": 100000,
        "requests_per_second": 1000,
    }
    built = make_stack(
        url, tmp_path_factory.mktemp("hostile"), workers=0, accounts={"capped": capped}
    )
    # One pool process: every request goes through one session and its pool.
    built.add_worker(concurrency=1)
    try:
        yield built
    finally:
        built.stop()


@pytest.fixture(autouse=True)
def clean_sandbox(stack: Stack) -> Iterator[None]:
    stack.sandbox_post("/_sandbox/reset")
    yield
    stack.sandbox_post("/_sandbox/settings", {"throttle_next": 0, "idle_close_s": 0})


def run(stack: Stack, job: dict[str, Any], timeout_s: float = 60) -> tuple[dict[str, int], float]:
    """Submit, wait for the end; the job's counts and how long it took."""
    producer = stack.producer()
    try:
        started = time.monotonic()
        job_id = producer.submit(job)
        status = stack.wait_for(job_id, timeout_s)
        took_s = time.monotonic() - started
        assert status.state == "completed"
        return {k: v for k, v in status.counts.items() if v}, took_s
    finally:
        producer.close()


def test_a_429_with_retry_after_1e12_holds_a_job_back_at_most_retry_max_s(stack: Stack) -> None:
    """What a new user tried: all 100 recipients were still pending 152 s later."""
    # A job first, so the worker is up and its account's limiter known.
    run(stack, {"provider": "capped", "text": "warm-up", "messages": [{"to": ro_numbers(1)[0]}]})
    stack.sandbox_post("/_sandbox/reset")
    stack.sandbox_post("/_sandbox/settings", {"throttle_next": 1, "retry_after": "1e12"})
    job = {
        "provider": "capped",
        "text": "Your appointment is tomorrow at 10:00.",
        "messages": [{"to": n} for n in ro_numbers(100, start=1)],
    }
    counts, took_s = run(stack, job, timeout_s=RETRY_MAX_S + 3 * SLACK_S)
    assert counts == {"accepted": 100}
    assert took_s < RETRY_MAX_S + SLACK_S
    stats = stack.sandbox_get("/_sandbox/stats")
    assert (stats["requests"], stats["processed_requests"], stats["items"]) == (2, 1, 100)


@pytest.mark.parametrize("idle_close_s", [1.0, 2.0])
def test_a_provider_closing_idle_connections_never_makes_unknowns(
    stack: Stack, idle_close_s: float
) -> None:
    """Below and above the workers' own idle limit (1.5 s): each job's
    request follows the provider's close of the connection the last one used."""
    stack.sandbox_post("/_sandbox/settings", {"idle_close_s": idle_close_s})
    for round_no in range(3):
        closed = stack.sandbox_get("/_sandbox/stats")["idle_closed"]
        numbers = ro_numbers(20, start=1000 + 100 * round_no)
        job = {
            "provider": "bulk",
            "text": "See you at 10",
            "messages": [{"to": n} for n in numbers],
        }
        counts, _ = run(stack, job)
        assert counts == {"accepted": 20}, f"round {round_no}"
        wait_until(
            lambda: stack.sandbox_get("/_sandbox/stats")["idle_closed"] > closed,  # noqa: B023
            30,
            "the provider to close the idle connection",
            interval_s=0.1,
        )
    assert stack.sandbox_get("/_sandbox/stats")["duplicates"] == 0
