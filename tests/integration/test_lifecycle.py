"""Job lifecycle (issue 10): the transitions that used to leave a job that
never ends, against a real Valkey, the sandbox and real worker processes.

- a pause while the job's last request is in flight, then a resume;
- a retry whose caller died between reopening the job and resetting it;
- a cancel right after a worker was SIGKILLed mid-request, and a cancel
  whose ``cancel_job`` message was lost.

Two ``recovery_s`` (worker/ops/timing.py): 50 where the sandbox answers in 2.5-3 s
(provider request timeout 4.3 s, chunk lease 18 s), 20 where the watchdog
must step in (visibility timeout, so the watchdog's stall time, 10 s).
Every test has its own Valkey server and stops everything it started; every
wait is on a condition with a time limit.
"""

from __future__ import annotations

import signal
import time
from contextlib import AbstractContextManager, closing
from pathlib import Path

import pytest

from producer import control
from producer.core import keys
from tests.integration.stack import Stack, elapsed, own_server_stack, ro_numbers
from tests.integration.test_job_control import (
    cli,
    ended_and_settled,
    in_flight,
    job,
    numbers_with,
    quiet,
    request_states,
    sent_numbers,
)
from worker.dev.launcher import wait_until

pytestmark = pytest.mark.integration

SLOW_RECOVERY_S = 50
FAST_RECOVERY_S = 20
ACCOUNTS = {
    # One request for a whole job of up to 1000.
    "single": {"batch_size": 1000, "messages_per_second": 1e5, "requests_per_second": 1e3},
    # One request per chunk of ten.
    "tens": {"batch_size": 10, "messages_per_second": 1e5, "requests_per_second": 1e3},
    # One recipient per request; two attempts, almost no backoff.
    "flaky": {
        "batch_size": 1,
        "messages_per_second": 1e5,
        "requests_per_second": 1e3,
        "max_attempts": 2,
        "retry_base_s": 0.05,
        "retry_max_s": 0.2,
        # Retries alone, without the circuit (which has tests of its own).
        "failover_after_failures": 1_000_000,
    },
}


def lifecycle_stack(
    tmp_path: Path, recovery_s: int, latency_ms: int = 0
) -> AbstractContextManager[Stack]:
    """Two workers on a Valkey server of their own."""
    return own_server_stack(
        tmp_path / "stack",
        workers=2,
        sandbox_args=("--latency-ms", str(latency_ms)),
        accounts=ACCOUNTS,
        settings_toml=f"\n[settings]\nrecovery_s = {recovery_s}\n",
    )


def kill(stack: Stack, victims: list[int]) -> None:
    """SIGKILL the process groups of these workers (indices); they leave the stack."""
    dead = [stack.workers[i] for i in victims]
    for worker in dead:
        worker.kill_group(signal.SIGKILL)
    for worker in dead:
        wait_until(lambda: not worker.alive(), 10, f"{worker.name} to die")  # noqa: B023
        worker.stop()  # closes its log
        stack.workers.remove(worker)


# --- jobs that never end ---------------------------------------------------------------


def test_a_job_paused_while_its_last_request_is_in_flight_completes_on_resume(
    tmp_path: Path,
) -> None:
    latency_s = 2.5
    with (
        lifecycle_stack(tmp_path, SLOW_RECOVERY_S, int(latency_s * 1000)) as stack,
        stack.redis() as client,
        closing(stack.producer()) as producer,
    ):
        job_id = producer.submit(job("single", ro_numbers(50)))
        # Begun under half the latency ago: still in flight when the pause returns.
        wait_until(
            lambda: bool(in_flight(client, job_id, begun_within_s=latency_s / 2)),
            30,
            "the job's only request to begin",
        )
        assert producer.pause(job_id).state == "paused"
        assert in_flight(client, job_id), "the request ended before the pause"
        wait_until(lambda: quiet(client, job_id), 30, "the request's answer")
        paused = producer.status(job_id)
        assert paused.state == "paused" and paused.counts["pending"] == 0

        producer.resume(job_id)
        started = time.monotonic()
        answer = cli(stack, "wait", job_id, "--timeout", "30")
        waited_s = elapsed(started)
        print(
            f"\nresumed with nothing pending: wait exited {answer.returncode} in {waited_s:.1f} s"
        )
        assert answer.returncode == 0, answer.stderr[-500:]
        assert waited_s < 10
        status = producer.status(job_id)
        assert status.state == "completed" and status.finished_at is not None
        assert status.counts["accepted"] == 50
        # Listed for retention, no longer watched; sent once.
        assert client.zscore(keys.FINISHED, job_id) is not None
        assert client.zscore(keys.ACTIVE, job_id) is None
        assert stack.sandbox_get("/_sandbox/stats")["items"] == 50


def test_a_retry_whose_caller_died_after_reopening_the_job_completes(tmp_path: Path) -> None:
    with (
        lifecycle_stack(tmp_path, FAST_RECOVERY_S) as stack,
        stack.redis() as client,
        closing(stack.producer()) as producer,
    ):
        # Half of the answers are 500s: with two attempts each, some end failed.
        stack.sandbox_post("/_sandbox/settings", {"fail_rate": 0.5, "seed": 5})
        total = 40
        job_id = producer.submit(job("flaky", ro_numbers(total)))
        first = stack.wait_for(job_id, 60)
        failed = [o for o in producer.results(job_id) if o.status == "failed"]
        assert first.state == "completed" and failed
        stack.sandbox_post("/_sandbox/reset")
        stack.sandbox_post("/_sandbox/settings", {"fail_rate": 0})

        # The retry's first step, then its caller dies: no reset, no plan task.
        assert control.reopen_for_retry(client, job_id, ["failed"]) == ("queued", True)
        reopened_s = time.monotonic()
        wait_until(
            lambda: producer.status(job_id).state == "completed",
            FAST_RECOVERY_S + 20,
            "the reopened job to complete",
            interval_s=0.2,
        )
        print(f"\nretry's caller died: completed {elapsed(reopened_s):.1f} s after the reopen")
        status = producer.status(job_id)
        assert status.counts["accepted"] == total and status.counts["failed"] == 0
        # Exactly the failed recipients were sent again, each once.
        assert sent_numbers(stack) == numbers_with(failed, "failed")
        assert client.zscore(keys.ACTIVE, job_id) is None
        assert client.zscore(keys.FINISHED, job_id) is not None


# --- cancels that never settle ---------------------------------------------------------


def test_a_cancel_right_after_a_worker_was_killed_mid_request_settles_every_recipient(
    tmp_path: Path,
) -> None:
    latency_s = 3.0
    total = 300  # 30 chunks of one request each
    with (
        lifecycle_stack(tmp_path, SLOW_RECOVERY_S, int(latency_s * 1000)) as stack,
        stack.redis() as client,
        closing(stack.producer()) as producer,
    ):
        job_id = producer.submit(job("tens", ro_numbers(total)))
        # Two pool children a worker: of three requests begun under half the
        # latency ago, at least one is the victim's, still in flight at the kill.
        wait_until(
            lambda: len(in_flight(client, job_id, begun_within_s=latency_s / 2)) >= 3,
            60,
            "three requests in flight",
        )
        flying = in_flight(client, job_id)
        stack.workers[0].kill_group(signal.SIGKILL)
        killed_s = time.monotonic()
        assert producer.cancel(job_id).state == "cancelled"
        kill(stack, [0])  # dead already: waits for it
        stack.add_worker()

        # `wait` returns once the cancelled job has settled every recipient.
        answer = cli(stack, "wait", job_id, "--timeout", str(SLOW_RECOVERY_S - elapsed(killed_s)))
        settled_s = elapsed(killed_s)
        print(
            f"\nkilled, cancelled: wait exited {answer.returncode} {settled_s:.1f} s after the kill"
        )
        assert answer.returncode == 0, answer.stderr[-500:]
        assert settled_s <= SLOW_RECOVERY_S
        status = producer.status(job_id)
        counts = status.counts
        assert status.state == "cancelled" and counts["pending"] == 0
        assert counts["failed"] == counts["expired"] == counts["rejected"] == 0
        outcomes = list(producer.results(job_id))
        # Requests in flight at the kill: the survivor's answered, the victim's
        # unknown (the job is at_most_once: they may have been sent).
        flown = {outcomes[i].status for request in flying for i in request["i"]}
        assert "unknown" in flown and flown <= {"accepted", "unknown"}, flown
        for outcome in outcomes:
            if outcome.status == "unknown":
                assert outcome.error_code == "interrupted"
        # Nothing sent twice; nothing sent that is recorded cancelled.
        stats = stack.sandbox_get("/_sandbox/stats")
        assert stats["duplicates"] == 0
        sent = sent_numbers(stack)
        assert not set(sent) & set(numbers_with(outcomes, "cancelled"))
        assert set(numbers_with(outcomes, "accepted")) <= set(sent)
        assert all(r["s"] == "done" for r in request_states(client, job_id))
        assert client.zscore(keys.ACTIVE, job_id) is None


def test_a_cancel_whose_cancel_task_was_lost_settles_every_recipient(tmp_path: Path) -> None:
    total = 200
    with (
        lifecycle_stack(tmp_path, FAST_RECOVERY_S, latency_ms=500) as stack,
        stack.redis() as client,
        closing(stack.producer()) as producer,
    ):
        job_id = producer.submit(job("tens", ro_numbers(total)))
        wait_until(lambda: bool(in_flight(client, job_id)), 60, "a request in flight")
        # No worker takes the cancel task while it is removed from the queue.
        kill(stack, [0, 1])
        assert producer.cancel(job_id).state == "cancelled"
        cancelled_s = time.monotonic()
        removed = 0
        for raw in client.lrange(keys.NORMAL_QUEUE, 0, -1):
            if b'"smsbulk.cancel_job"' in raw:
                removed += int(client.lrem(keys.NORMAL_QUEUE, 1, raw))
        assert removed == 1
        stack.add_worker()
        stack.add_worker()

        wait_until(
            ended_and_settled(producer, job_id),
            FAST_RECOVERY_S + 15,
            "every recipient final",
            interval_s=0.2,
        )
        print(f"\ncancel task lost: every recipient final {elapsed(cancelled_s):.1f} s after")
        status = producer.status(job_id)
        assert status.state == "cancelled" and status.counts["cancelled"] > 0
        assert status.counts["accepted"] + status.counts["cancelled"] + status.counts[
            "unknown"
        ] == (total)
        assert stack.sandbox_get("/_sandbox/stats")["duplicates"] == 0
        wait_until(
            lambda: client.zscore(keys.ACTIVE, job_id) is None, 15, "the job to be unwatched"
        )
