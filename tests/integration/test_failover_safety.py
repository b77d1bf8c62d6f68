"""Failover that never sends twice (issue 12), against a real Valkey, the
sandbox and real worker processes; every wait is on a condition with a time
limit, every stack has its own Valkey server.

1. Read timeouts on account A under `at_most_once`: `unknown`, never sent on B.
2. A worker SIGKILLed mid-job on a failing-over route: no duplicate, nothing pending.
3. `daily_max_parts` reached on A: the rest goes to B; with no B, recipients
   wait, then expire by their validity.

`recovery_s` is 30: provider request timeout 2 s, task time limit 6 s,
longest countdown 6 s, chunk lease 11 s (worker/ops/timing.py).
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis

from producer.core import keys
from producer.job import Outcome
from tests.conftest import sandbox_account
from tests.integration.stack import PROVIDER_ACCOUNTS, Stack, elapsed, own_server_stack, ro_numbers
from worker.dev.launcher import start_sandbox, wait_until

pytestmark = pytest.mark.integration

RECOVERY_S = 30
SETTINGS = f"\n[settings]\nrecovery_s = {RECOVERY_S}\n"
REQUEST_TIMEOUT_S = 2.0  # worker/ops/timing.py with recovery_s 30
FAST = {"messages_per_second": 100_000, "requests_per_second": 1000}
RETRIES = {"max_attempts": 2, "retry_base_s": 0.1, "retry_max_s": 0.5}
CIRCUIT = {"failover_after_failures": 3, "failover_cooldown_s": 2}


def gosms_account(name: str, base_url: str, **settings: object) -> str:
    """A gosms account on the sandbox at ``base_url`` (national numbers)."""
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    return (
        f'\n[providers.{name}]\nkind = "gosms"\nbase_url = "{base_url}"\n'
        f'default_region = "RO"\n{PROVIDER_ACCOUNTS["gosms"]}\n{lines}'
    )


def route(name: str, accounts: Iterable[str]) -> str:
    return f'\n[routes.{name}]\ndefault_region = "RO"\naccounts = {json.dumps(list(accounts))}\n'


def configure(stack: Stack, toml: str) -> None:
    """Append to the stack's config; before any worker starts (they read it then)."""
    assert not stack.workers
    with stack.config.open("a") as config:
        config.write(toml)


def sent(base_url: str, kind: str) -> list[dict[str, Any]]:
    """What the sandbox at ``base_url`` accepted of ``kind``, one row per recipient."""
    with urllib.request.urlopen(f"{base_url}/_sandbox/sent?kind={kind}", timeout=30) as answer:
        return [json.loads(line) for line in answer.read().decode().splitlines() if line]


def sandbox_stats(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/_sandbox/stats", timeout=30) as answer:
        stats: dict[str, Any] = json.loads(answer.read())
    return stats


@contextmanager
def side_sandbox(stack: Stack, log_dir: Path, settings: dict[str, Any]) -> Iterator[str]:
    """Another sandbox process, with ``settings`` (knobs that act on every
    kind: one account's own faults); its base URL. Stopped on the way out."""
    process, port = start_sandbox(stack.env, log_dir)
    try:
        base_url = f"http://127.0.0.1:{port}"
        request = urllib.request.Request(
            f"{base_url}/_sandbox/settings",
            data=json.dumps(settings).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=30).close()
        yield base_url
    finally:
        process.stop()


def per_number(rows: list[dict[str, Any]]) -> Counter[str]:
    """How often each number was accepted, keyed by its national significant
    number (sendbulk writes 407..., gosms 07...)."""
    return Counter(row["number"][-9:] for row in rows)


def nonzero(accounts: dict[str, dict[Any, int]]) -> dict[str, dict[str, int]]:
    """A status's per-account counts without the zeros."""
    return {
        name: {str(status): n for status, n in counts.items() if n}
        for name, counts in accounts.items()
    }


def key(to: str) -> str:
    return to[-9:]


def submit(stack: Stack, numbers: list[str], provider: str, **fields: Any) -> str:
    producer = stack.producer()
    try:
        return producer.submit(
            {
                "provider": provider,
                "text": "Your code is 1234",
                "delivery_policy": "at_most_once",
                "messages": [{"to": n} for n in numbers],
                **fields,
            }
        )
    finally:
        producer.close()


def results(stack: Stack, job_id: str) -> list[Outcome]:
    producer = stack.producer()
    try:
        return list(producer.results(job_id))
    finally:
        producer.close()


def job_counts(stack: Stack, job_id: str) -> dict[str, int]:
    producer = stack.producer()
    try:
        return {str(status): n for status, n in producer.status(job_id).counts.items()}
    finally:
        producer.close()


# --- 1. Read timeouts on A: unknown, never sent on B --------------------------------

TIMEOUT_JOB = 40
TIMEOUT_BATCH = 10


def test_read_timeouts_on_a_are_unknown_and_never_sent_on_b(tmp_path: Path) -> None:
    """A has a sandbox of its own that processes every request, then hangs
    past the request timeout; B (another kind) is on the stack's sandbox."""
    hang = {"timeout_rate": 1.0, "hang_s": REQUEST_TIMEOUT_S + 3}
    with (
        own_server_stack(tmp_path, workers=0, settings_toml=SETTINGS) as stack,
        side_sandbox(stack, tmp_path, hang) as a_url,
    ):
        configure(
            stack,
            sandbox_account("slow", a_url, batch_size=TIMEOUT_BATCH, **FAST, **RETRIES, **CIRCUIT)
            + gosms_account("spare", stack.sandbox_url, batch_size=TIMEOUT_BATCH, **FAST, **RETRIES)
            + route("slow_first", ["slow", "spare"]),
        )
        stack.add_worker()
        numbers = ro_numbers(TIMEOUT_JOB)
        started = time.monotonic()
        job_id = submit(stack, numbers, "slow_first")
        status = stack.wait_for(job_id, 60)
        took_s = elapsed(started)
        outcomes = results(stack, job_id)
        on_a = per_number(sent(a_url, "sendbulk"))
        on_b = stack.sandbox_get("/_sandbox/sent")
        b_stats = stack.sandbox_get("/_sandbox/stats")
        print(
            f"\nread timeouts on A: {took_s:.1f} s; {status.counts}; accounts "
            f"{status.accounts}; A took {sum(on_a.values())}, B took {len(on_b)} "
            f"in {b_stats['requests']} requests"
        )

    assert status.state == "completed" and status.counts["pending"] == 0
    assert status.counts["unknown"] == TIMEOUT_JOB
    for o in outcomes:
        assert o.status == "unknown" and o.provider == "slow"
        assert o.error_code == "no-answer" and o.attempts == 1
    # A processed each of them once (then its answer never came) ...
    assert on_a == Counter({key(n): 1 for n in numbers})
    # ... and B never saw any of them: no request at all reached it.
    assert on_b == [] and b_stats["requests"] == 0
    assert nonzero(status.accounts) == {"slow": {"unknown": TIMEOUT_JOB}}


# --- 2. SIGKILL of a worker mid-job on a failing-over route ----------------------------

KILL_JOB = 3000
KILL_BATCH = 50
A_LATENCY_MS = 400  # A's sandbox: most of the time in flight is on A
B_LATENCY_MS = 50
WORKER_CONCURRENCY = 2


def request_states(client: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    total, chunk_size = client.hmget(keys.job(job_id), ["total", "chunk_size"])
    if total is None or chunk_size is None:
        return []
    pipe = client.pipeline(transaction=False)
    for chunk in range(-(-int(total) // int(chunk_size))):
        pipe.hgetall(keys.requests(job_id, chunk))
    return [json.loads(raw) for states in pipe.execute() for raw in states.values()]


def in_flight_on_a_mid_job(client: redis.Redis, job_id: str) -> bool:
    """Under way (some requests done), at least three of the four pool
    children began a request less than half A's latency ago (so one of them
    is the victim's, still in flight when the kill follows), and every
    request in flight is on A (so the victim's is: the case where a resend
    on B would be a duplicate, had A processed it). Every chunk's first pass
    goes to A; the passes that move its recipients to B queue behind them."""
    states = request_states(client, job_id)
    if sum(r["s"] == "done" for r in states) < 8:
        return False
    now = time.time()
    sending = [r for r in states if r["s"] == "sending"]
    young = [r for r in sending if now - r["t"] < A_LATENCY_MS / 2000]
    return len(young) >= 3 and all(r.get("acc") == "down" for r in sending)


def test_a_worker_killed_mid_job_on_a_failing_over_route_sends_nothing_twice(
    tmp_path: Path,
) -> None:
    """A (`down`, sendbulk, a sandbox of its own) answers 503 to every request,
    unprocessed: each recipient moves to B (`up`, gosms) once its one attempt
    on A is used (A's circuit never opens here, so every chunk tries A first)."""
    with (
        own_server_stack(
            tmp_path,
            workers=0,
            settings_toml=SETTINGS,
            sandbox_args=("--latency-ms", str(B_LATENCY_MS)),
        ) as stack,
        side_sandbox(
            stack,
            tmp_path,
            {"latency_ms": A_LATENCY_MS, "fail_status": {"sendbulk": 503}},
        ) as a_url,
    ):
        down = {"batch_size": KILL_BATCH, "max_attempts": 1, "failover_after_failures": 10**6}
        configure(
            stack,
            sandbox_account("down", a_url, **down, **FAST)
            + gosms_account("up", stack.sandbox_url, batch_size=KILL_BATCH, **FAST, **RETRIES)
            + route("failing", ["down", "up"]),
        )
        for _ in range(2):
            stack.add_worker(WORKER_CONCURRENCY)
        client = stack.redis()
        try:
            numbers = ro_numbers(KILL_JOB)
            started = time.monotonic()
            job_id = submit(stack, numbers, "failing")
            wait_until(
                lambda: in_flight_on_a_mid_job(client, job_id),
                60,
                "requests in flight mid-job",
                interval_s=0.005,
            )
            victim = stack.workers[0]
            victim.kill_group(signal.SIGKILL)
            killed_at = time.monotonic()
            in_flight = [r for r in request_states(client, job_id) if r["s"] == "sending"]
            victim.popen.wait(10)
            victim.stop()
            stack.workers.remove(victim)  # the other worker takes its chunks

            status = stack.wait_for(job_id, 90)
            after_kill_s, total_s = elapsed(killed_at), elapsed(started)
            requests = request_states(client, job_id)
        finally:
            client.close()
        outcomes = results(stack, job_id)
        on_a = sent(a_url, "sendbulk")
        a_stats = sandbox_stats(a_url)
        b_rows = stack.sandbox_get("/_sandbox/sent?kind=gosms")
        on_b = per_number(b_rows)
        ids = {row["message_id"] for row in b_rows}
        stats = stack.sandbox_get("/_sandbox/stats")

    unknown = [o for o in outcomes if o.status == "unknown"]
    interrupted = [r for r in requests if r.get("interrupted")]
    by_status = Counter(o.status for o in outcomes)
    print(
        f"\nkilled {killed_at - started:.1f} s in, completed {after_kill_s:.1f} s after "
        f"({total_s:.1f} s in all); in flight at the kill {len(in_flight)} requests "
        f"({Counter(r.get('acc') for r in in_flight)}); interrupted {len(interrupted)}; "
        f"{dict(by_status)}; A's sandbox: {a_stats['requests']} requests, "
        f"{a_stats['items']} items; B's: {stats['requests']} requests, "
        f"{stats['items']} items, duplicates {stats['duplicates']}"
    )
    # Nothing pending: the surviving worker finished the victim's chunks.
    assert status.state == "completed" and status.counts["pending"] == 0
    assert not any(r["s"] in ("pending", "sending") for r in requests)
    # A refused every request, never processing one; every chunk tried it
    # (an interrupted request may have died before it left the worker).
    assert on_a == []
    assert a_stats["requests"] >= KILL_JOB // KILL_BATCH - len(interrupted)
    # No duplicate: each number accepted at most once across A and B.
    assert stats["duplicates"] == 0 and max(on_b.values()) == 1
    assert set(on_b) <= {key(n) for n in numbers}
    # Each accepted recipient was sent by B, once, with the id B gave it.
    assert by_status["accepted"] + by_status["unknown"] == KILL_JOB
    for o in outcomes:
        if o.status == "accepted":
            assert o.provider == "up" and o.provider_message_id in ids
            assert o.attempts == 2  # one on A (503), one on B
            assert on_b[key(o.to)] == 1
    # Only the victim's requests in flight (one per pool child) are unknown.
    assert 1 <= len(interrupted) <= WORKER_CONCURRENCY
    assert len(unknown) == len(interrupted) * KILL_BATCH  # none of them moved on
    assert {o.index for o in unknown} <= {i for r in in_flight for i in r["i"]}
    assert all(o.error_code == "interrupted" for o in unknown)
    # The victim's requests were on A: those recipients are unknown there,
    # and none was sent on B.
    assert {r.get("acc") for r in in_flight} == {"down"}
    for o in unknown:
        assert o.provider == "down" and o.attempts == 1
        assert key(o.to) not in on_b
    assert len(on_b) == by_status["accepted"]


# --- 3. daily_max_parts reached on A ---------------------------------------------

CAP = 30  # parts a day; a multiple of the batch, so A takes exactly CAP
CAP_BATCH = 10
CAP_JOB = 100


def test_a_full_daily_cap_on_a_sends_the_rest_on_b(tmp_path: Path) -> None:
    with own_server_stack(
        tmp_path,
        workers=0,
        settings_toml=SETTINGS,
        accounts={"capped": {"batch_size": CAP_BATCH, "daily_max_parts": CAP, **FAST}},
    ) as stack:
        configure(
            stack,
            gosms_account("spare", stack.sandbox_url, batch_size=CAP_BATCH, **FAST)
            + route("capped_first", ["capped", "spare"]),
        )
        stack.add_worker()
        numbers = ro_numbers(CAP_JOB)
        started = time.monotonic()
        job_id = submit(stack, numbers, "capped_first")
        status = stack.wait_for(job_id, 60)
        took_s = elapsed(started)
        outcomes = results(stack, job_id)
        on_a = per_number(stack.sandbox_get("/_sandbox/sent?kind=sendbulk"))
        on_b = per_number(stack.sandbox_get("/_sandbox/sent?kind=gosms"))
        with stack.redis() as client:
            taken = client.hget(keys.daily_parts("capped"), "parts")
        print(
            f"\ndaily cap on A: {took_s:.1f} s; {status.counts}; accounts {status.accounts}; "
            f"A took {sum(on_a.values())}, B took {sum(on_b.values())}"
        )

    assert status.state == "completed" and status.counts["accepted"] == CAP_JOB
    assert sum(on_a.values()) == CAP and int(taken or 0) == CAP
    assert sum(on_b.values()) == CAP_JOB - CAP
    # Each recipient once, on one account or the other, never both.
    assert not set(on_a) & set(on_b)
    assert on_a + on_b == Counter({key(n): 1 for n in numbers})
    by_provider = Counter(o.provider for o in outcomes)
    assert by_provider == {"capped": CAP, "spare": CAP_JOB - CAP}
    for o in outcomes:
        assert (on_a if o.provider == "capped" else on_b)[key(o.to)] == 1
    assert nonzero(status.accounts) == {
        "capped": {"accepted": CAP},
        "spare": {"accepted": CAP_JOB - CAP},
    }


LONE_JOB = 50
VALIDITY_MINUTES = 1  # the least a job may ask
# Validity counts from schedule_at, and a schedule_at in the past means now
# (INTERFACE.md): so the jobs' validity ends this long after they are submitted.
LEFT_S = 15


def test_a_full_daily_cap_with_no_other_account_waits_then_expires(tmp_path: Path) -> None:
    """Two jobs at once: one on the account itself (`solo`), one on a route
    whose list has only its account (`lone`); each account's cap is CAP."""
    capped = {"batch_size": CAP_BATCH, "daily_max_parts": CAP, **FAST}
    with own_server_stack(
        tmp_path,
        workers=0,
        settings_toml=SETTINGS,
        accounts={"solo": capped, "lone_account": capped},
    ) as stack:
        configure(stack, route("lone", ["lone_account"]))
        stack.add_worker()
        deadline = time.time() + LEFT_S
        schedule_at = datetime.fromtimestamp(deadline, UTC) - timedelta(minutes=VALIDITY_MINUTES)
        jobs = {
            provider: (
                numbers,
                submit(
                    stack,
                    numbers,
                    provider,
                    schedule_at=schedule_at.isoformat(),
                    validity_minutes=VALIDITY_MINUTES,
                ),
            )
            for provider, numbers in (
                ("solo", ro_numbers(LONE_JOB)),
                ("lone", ro_numbers(LONE_JOB, start=1000)),
            )
        }
        started = time.monotonic()

        # The cap is reached, and the rest waits (pending) while still valid.
        def at_cap(job_id: str) -> bool:
            return job_counts(stack, job_id).get("accepted") == CAP

        for _, job_id in jobs.values():
            wait_until(
                partial(at_cap, job_id),
                LEFT_S,
                f"job {job_id} to reach the cap",
                interval_s=0.2,
            )
        waiting = {p: job_counts(stack, job_id) for p, (_, job_id) in jobs.items()}
        waited_at = time.time()
        # Still waiting, not failed, until just before the validity ends.
        time.sleep(max(0.0, deadline - 2 - time.time()))
        late = {p: job_counts(stack, job_id) for p, (_, job_id) in jobs.items()}
        late_at = time.time()
        finals = {p: stack.wait_for(job_id, LEFT_S + 30) for p, (_, job_id) in jobs.items()}
        ended_at = time.time()
        took_s = elapsed(started)
        outcomes = {p: results(stack, job_id) for p, (_, job_id) in jobs.items()}
        on_sandbox = per_number(stack.sandbox_get("/_sandbox/sent?kind=sendbulk"))
        print(
            f"\ndaily cap, no other account: waiting {waiting} "
            f"{deadline - waited_at:.1f} s before the deadline; ended "
            f"{ended_at - deadline:.1f} s after it ({took_s:.1f} s in all); "
            f"{ {p: dict(s.counts) for p, s in finals.items()} }"
        )

    assert waited_at < deadline and late_at < deadline
    for provider in jobs:
        for counts in (waiting[provider], late[provider]):
            assert counts["pending"] == LONE_JOB - CAP, provider
            assert counts["expired"] == 0 and counts["failed"] == 0, provider
    for provider, status in finals.items():
        numbers = jobs[provider][0]
        assert status.state == "completed", provider
        assert status.counts["accepted"] == CAP, provider
        assert status.counts["expired"] == LONE_JOB - CAP, provider
        expired = [o for o in outcomes[provider] if o.status == "expired"]
        assert all(o.error == "validity passed" for o in expired)
        # Not before the validity ended; each sent recipient sent once.
        assert all(key(o.to) not in on_sandbox for o in expired)
        sent_here = [n for n in numbers if key(n) in on_sandbox]
        assert len(sent_here) == CAP and all(on_sandbox[key(n)] == 1 for n in sent_here)
    assert ended_at >= deadline
    assert sum(on_sandbox.values()) == 2 * CAP
