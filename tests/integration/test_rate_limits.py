"""Global rate limits through real worker processes and the sandbox's clock.

Each test builds its own stack (sandbox, four worker processes, accounts of
its own) and stops every process it started. Rates are read from the
sandbox: its per-second histogram (`/_sandbox/rate`) and the time it
recorded each recipient (`/_sandbox/sent`), never from our own logs.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from producer.job import Outcome
from tests.integration.stack import Stack, make_stack, ro_numbers
from worker.dev.launcher import wait_until

pytestmark = pytest.mark.integration

WORKER_PROCESSES = 4
READY_TIMEOUT_S = 60


def ping_replies(stack: Stack) -> int:
    probe = Celery("probe", broker=stack.redis_url)
    try:
        return len(probe.control.ping(timeout=0.5))
    finally:
        probe.close()


@contextmanager
def rate_stack(
    redis_url: str, log_dir: Path, accounts: Mapping[str, Mapping[str, float]]
) -> Iterator[Stack]:
    """A sandbox and four single-process workers (four hosts, as far as the
    limiter can tell) with these accounts; all of it stopped on the way out."""
    stack = make_stack(redis_url, log_dir, workers=0, accounts=accounts)
    try:
        for _ in range(WORKER_PROCESSES):
            stack.add_worker(concurrency=1)

        def ready() -> bool:
            for worker in stack.workers:
                if not worker.alive():
                    raise AssertionError(f"{worker.name} died:\n{worker.output()[-3000:]}")
            return ping_replies(stack) == WORKER_PROCESSES

        wait_until(ready, READY_TIMEOUT_S, "four workers to answer a ping", interval_s=0.2)
        yield stack
    finally:
        stack.stop()


def job(provider: str, numbers: list[str]) -> dict[str, Any]:
    return {
        "provider": provider,
        "text": "Sale ends tonight.",
        "messages": [{"to": n} for n in numbers],
    }


def results(stack: Stack, job_id: str) -> list[Outcome]:
    producer = stack.producer()
    try:
        return list(producer.results(job_id))
    finally:
        producer.close()


def sent_times(stack: Stack, numbers: list[str]) -> list[float]:
    """When the sandbox recorded each of these numbers (its clock), sorted."""
    wanted = {"4" + n for n in numbers}
    rows = stack.sandbox_get("/_sandbox/sent?kind=sendbulk")
    return sorted(row["t"] for row in rows if row["number"] in wanted)


def count_between(times: list[float], start: float, end: float) -> int:
    return bisect.bisect_left(times, end) - bisect.bisect_left(times, start)


def max_sliding_window(times: list[float], width_s: float = 1.0) -> int:
    """The most recipients recorded in any interval [t, t + width_s]."""
    return max(bisect.bisect_right(times, t + width_s) - i for i, t in enumerate(times))


def full_seconds(per_second: dict[str, int]) -> dict[int, int]:
    """The histogram without its partial first and last second (gaps as 0)."""
    seconds = sorted(int(s) for s in per_second)
    return {s: per_second.get(str(s), 0) for s in range(seconds[0] + 1, seconds[-1])}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("batch_size", [100, 200])
def test_four_workers_share_two_hundred_parts_per_second(
    redis_url: str, tmp_path: Path, batch_size: int
) -> None:
    # 100 recipients a request (chunks of 100), so the histogram moves in
    # steps of half a second's worth; requests_per_second (50) never binds.
    # Requests of 200 take the whole bucket each, so each can go only once
    # it is full again: asking again after each wait lost a round trip and a
    # wake-up a second (170-181 parts/s); booked slots send one a second.
    limited: dict[str, float] = {
        "messages_per_second": 200,
        "burst_s": 1,
        "requests_per_second": 50,
        "batch_size": batch_size,
    }
    numbers = ro_numbers(4200)  # 20 s at 200/s after the first burst
    with rate_stack(redis_url, tmp_path / "stack", {"limited": limited}) as stack:
        producer = stack.producer()
        job_id = producer.submit(job("limited", numbers))
        producer.close()
        status = stack.wait_for(job_id, timeout_s=60)
        assert status.counts["accepted"] == len(numbers)
        rate = stack.sandbox_get("/_sandbox/rate?kind=sendbulk")
        times = sent_times(stack, numbers)
        outcomes = results(stack, job_id)
        busy = {w.name for w in stack.workers if '"provider_request"' in w.output()}

    per_second = full_seconds(rate["items_per_second"])
    # The first burst (200 parts above the rate, which burst_s allows) may
    # spill into the first full second as the workers come in one by one:
    # the rate is read from the second full second on.
    steady = list(per_second.values())[1:]
    measured = sum(steady) / len(steady)
    print(f"\nsandbox items/s over {len(steady)} full seconds: {measured:.1f}")
    print(f"per second: {list(per_second.values())}")
    print(
        f"max aligned second: {max(per_second.values())}, "
        f"max sliding 1 s window: {max_sliding_window(times)}"
    )
    print(f"requests/s: {rate['requests_per_second']}")
    # The first request of the first burst to the last: 200 parts at once,
    # the others at the rate.
    sent_rate = (len(times) - 200) / (times[-1] - times[0])
    print(f"parts/s after the first burst, by the sandbox's clock: {sent_rate:.1f}")
    assert len(steady) >= 17
    assert 190 <= measured <= 210  # ±5 % of 200
    assert 192 <= sent_rate <= 204
    assert max(rate["items_per_second"].values()) <= 400  # limit + burst
    assert max_sliding_window(times) <= 400
    assert max(rate["requests_per_second"].values()) < 50  # parts bind, not requests
    # Every process took part, and waiting cost no attempt.
    assert busy == {w.name for w in stack.workers}
    assert all(o.status == "accepted" and o.attempts == 1 for o in outcomes)


@pytest.mark.timeout(180)
def test_a_fast_account_is_not_held_up_by_a_saturated_slow_one(
    redis_url: str, tmp_path: Path
) -> None:
    # The slow job has more chunks (10 of 100) than there are worker
    # processes, and needs 20 s; the fast one is queued behind all of it.
    slow: dict[str, float] = {
        "messages_per_second": 50,
        "burst_s": 1,
        "requests_per_second": 50,
        "batch_size": 100,
    }
    fast: dict[str, float] = {"messages_per_second": 5000, "burst_s": 1, "requests_per_second": 100}
    slow_numbers, fast_numbers = ro_numbers(1000), ro_numbers(500, start=100_000)
    accounts = {"slow": slow, "fast": fast}
    with rate_stack(redis_url, tmp_path / "stack", accounts) as stack:
        producer = stack.producer()
        slow_id = producer.submit(job("slow", slow_numbers))
        wait_until(
            lambda: producer.status(slow_id).counts.get("accepted", 0) > 0, 30, "the slow job"
        )
        submitted = time.monotonic()
        fast_id = producer.submit(job("fast", fast_numbers))
        assert stack.wait_for(fast_id, timeout_s=30).counts["accepted"] == 500
        fast_took_s = time.monotonic() - submitted
        slow_when_fast_done = producer.status(slow_id)
        slow_status = stack.wait_for(slow_id, timeout_s=60)
        slow_times = sent_times(stack, slow_numbers)
        slow_outcomes = results(stack, slow_id)
        producer.close()

    slow_span_s = slow_times[-1] - slow_times[0]
    print(
        f"\nfast job (500) completed {fast_took_s:.2f} s after submission; slow job "
        f"(1000 at 50/s) had {slow_when_fast_done.counts.get('accepted', 0)} accepted then, "
        f"took {slow_span_s:.1f} s"
    )
    assert fast_took_s < 6
    assert slow_when_fast_done.state == "running"
    assert slow_when_fast_done.counts.get("accepted", 0) < 500
    # The slow account kept its own limit, and waiting lost or failed nobody.
    assert slow_span_s >= (1000 - 50) / 50 * 0.95
    assert max_sliding_window(slow_times) <= 100
    assert slow_status.counts["accepted"] == 1000
    assert all(o.status == "accepted" and o.attempts == 1 for o in slow_outcomes)


@pytest.mark.timeout(180)
def test_429s_halve_the_rate_the_sandbox_sees_and_it_climbs_back(
    redis_url: str, tmp_path: Path
) -> None:
    # Requests of 10 parts (400/s × 0.025 s) keep the rate smooth at any factor.
    throttled: dict[str, float] = {
        "messages_per_second": 400,
        "burst_s": 0.025,
        "requests_per_second": 1000,
        "max_attempts": 5,
        # The limiter's halving alone: 1.5 s of 429s would open the account's
        # circuit (tested on its own) and stop it for the cool-down.
        "failover_after_failures": 1_000_000,
    }
    numbers = ro_numbers(3600)
    with rate_stack(redis_url, tmp_path / "stack", {"throttled": throttled}) as stack:
        producer = stack.producer()
        job_id = producer.submit(job("throttled", numbers))

        def items() -> int:
            return int(stack.sandbox_get("/_sandbox/stats")["items"])

        wait_until(lambda: items() >= 1000, 30, "1000 recipients sent")
        # 1.5 s of 429s with Retry-After: 1 makes two rounds of them a second
        # apart: the account's rate is halved twice.
        stack.sandbox_post("/_sandbox/settings", {"throttle_rate": 1.0})
        throttle_on = time.time()
        wait_until(lambda: time.time() > throttle_on + 1.5, 5, "1.5 s of throttling")
        stack.sandbox_post("/_sandbox/settings", {"throttle_rate": 0.0})
        throttle_off = time.time()
        status = stack.wait_for(job_id, timeout_s=50)
        times = sent_times(stack, numbers)
        outcomes = results(stack, job_id)
        producer.close()

    first, last = times[0], times[-1]
    before = count_between(times, first + 1, throttle_on) / (throttle_on - first - 1)
    early = count_between(times, throttle_off + 0.5, throttle_off + 9) / 8.5
    late_end = min(throttle_off + 20, last - 0.5)
    late = count_between(times, throttle_off + 11, late_end) / (late_end - throttle_off - 11)
    print(
        f"\nsandbox items/s: before {before:.0f}, 0.5-9 s after the 429s {early:.0f}, "
        f"11-{late_end - throttle_off:.0f} s after {late:.0f}; "
        f"job ended {last - throttle_off:.1f} s after the 429s"
    )
    assert 340 <= before <= 410  # bursts of one request: a late one's share is lost
    assert early <= before * 0.6  # halved (twice, 100/s expected)
    assert late_end - throttle_off >= 15, "the job ended too early to see the climb"
    assert late > early  # 10 % per 10 s without a 429
    assert status.counts["accepted"] == len(numbers)
    assert all(o.status == "accepted" for o in outcomes)
    assert max(o.attempts for o in outcomes) <= 5
    assert any(o.attempts > 1 for o in outcomes)  # the 429s did hit recipients


@pytest.mark.timeout(180)
def test_a_one_time_code_takes_a_saturated_accounts_capacity_before_its_campaign(
    redis_url: str, tmp_path: Path
) -> None:
    # 2000 campaign parts at 100/s in requests of 10 (200 chunks), so about
    # 190 chunks wait for capacity at any time. A high-priority code was one
    # of them: deferred among them, it came back seconds later. On the
    # reserve (a tenth of the burst) it goes once a worker process is free.
    shared: dict[str, float] = {
        "messages_per_second": 100,
        "burst_s": 1,
        "requests_per_second": 50,
        "batch_size": 10,
    }
    campaign, codes = ro_numbers(2000), ro_numbers(3, start=500_000)
    with rate_stack(redis_url, tmp_path / "stack", {"shared": shared}) as stack:
        producer = stack.producer()
        campaign_id = producer.submit(job("shared", campaign))
        wait_until(
            lambda: producer.status(campaign_id).counts.get("accepted", 0) >= 300,
            30,
            "the campaign to saturate its account",
        )
        posted: dict[str, float] = {}
        code_ids = []
        for number in codes:
            posted[number] = time.time()
            code_ids.append(producer.submit({**job("shared", [number]), "priority": "high"}))
            time.sleep(1)
        for code_id in code_ids:
            assert stack.wait_for(code_id, timeout_s=30).counts["accepted"] == 1
        campaign_left = producer.status(campaign_id).counts["pending"]
        assert stack.wait_for(campaign_id, timeout_s=60).counts["accepted"] == len(campaign)
        producer.close()
        arrived = {n: sent_times(stack, [n])[0] for n in codes}
        times = sent_times(stack, campaign + codes)

    took = {n: round(arrived[n] - posted[n], 2) for n in codes}
    print(f"\ncodes, submission to the provider (s): {took}; campaign left then: {campaign_left}")
    assert campaign_left > 500  # the codes went while the campaign still had far to go
    assert max(took.values()) < 2.0
    # The reserve orders who gets the capacity; it adds none.
    assert max_sliding_window(times) <= 200  # rate + burst
    assert (len(times) - 100) / (times[-1] - times[0]) <= 100 * 1.03
