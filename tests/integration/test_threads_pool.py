"""A worker on Celery's threads pool (``smsbulk worker --pool=threads``):
its task threads share one event loop, so one process has many chunks in
flight. SIGKILL of that process with several chunks in flight in it loses
nothing and sends nothing twice that its delivery policy does not allow:
the same guarantees as a prefork worker's (test_crash_safety.py), with every
in-flight request of the dead process settled by the survivor.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from tests.integration.stack import elapsed, own_server_stack, ro_numbers
from tests.integration.test_crash_safety import (
    accepted_so_far,
    request_states,
    results,
    sandbox_number,
    sending,
    sent_per_number,
    submit,
)
from worker.dev.launcher import wait_until

pytestmark = pytest.mark.integration

RECOVERY_S = 30
THREADS = 8
RECIPIENTS = 20_000
BATCH = 100
LATENCY_MS = 400
ACCOUNT = {"batch_size": BATCH, "messages_per_second": 1_000_000, "requests_per_second": 10_000}


def many_in_flight(client: redis.Redis, job_id: str) -> bool:
    """Well under way, with at least 3 of the (one) worker's threads in a
    young request: one that the kill will find still in flight."""
    if accepted_so_far(client, job_id) < RECIPIENTS // 5:
        return False
    now = time.time()
    young = [
        r
        for r in sending(request_states(client, job_id)).values()
        if now - r.state["t"] < LATENCY_MS / 2000
    ]
    return len(young) >= 3


@pytest.mark.timeout(240)
@pytest.mark.parametrize("policy", ["at_most_once", "at_least_once"])
def test_a_threads_pool_worker_killed_with_chunks_in_flight_loses_and_repeats_nothing(
    tmp_path: Path, policy: str
) -> None:
    with own_server_stack(
        tmp_path / "stack",
        workers=0,
        accounts={"crash": ACCOUNT},
        settings_toml=f"\n[settings]\nrecovery_s = {RECOVERY_S}\n",
        sandbox_args=("--latency-ms", str(LATENCY_MS)),
    ) as stack:
        # The victim works alone until the kill, so that every request in
        # flight is its own (requests carry no worker name); the survivor
        # starts after it and settles them.
        victim = stack.add_worker(THREADS, "--pool=threads")
        client = stack.redis()
        numbers = ro_numbers(RECIPIENTS)
        job_id = submit(stack, numbers, policy, "crash")
        wait_until(lambda: many_in_flight(client, job_id), 90, "requests in flight", 0.005)
        victim.kill_group(signal.SIGKILL)
        killed_at = time.monotonic()
        in_flight_at_kill = sending(request_states(client, job_id))
        victim.popen.wait(10)
        victim.stop()
        stack.workers.remove(victim)
        stack.add_worker(THREADS, "--pool=threads")
        status = stack.wait_for(job_id, 150)
        after_kill_s = elapsed(killed_at)
        outcomes = results(stack, job_id)
        counts, ids = sent_per_number(stack)
        stats = stack.sandbox_get("/_sandbox/stats")
        requests = request_states(client, job_id)

    interrupted = {(r.chunk, r.request_id) for r in requests if r.state.get("interrupted")}
    interrupted_indices = {
        i
        for key in interrupted
        if key in in_flight_at_kill
        for i in in_flight_at_kill[key].state["i"]
    }
    unknown = {o.index for o in outcomes if o.status == "unknown"}
    print(
        f"\n{policy}: completed {after_kill_s:.1f} s after the kill; in flight at the kill "
        f"{len(in_flight_at_kill)} requests, of them the victim's {len(interrupted)}; "
        f"unknown {len(unknown)}; duplicated numbers {stats['duplicates']}"
    )
    assert status.state == "completed" and status.counts["pending"] == 0
    assert not any(r.state["s"] in ("pending", "sending") for r in requests)
    # Several chunks were in flight in the one killed process, each settled.
    assert 3 <= len(interrupted) <= THREADS
    assert interrupted <= set(in_flight_at_kill)
    by_index = {o.index: o for o in outcomes}
    if policy == "at_most_once":
        assert stats["duplicates"] == 0 and max(counts.values()) == 1
        assert unknown == interrupted_indices
        assert all(by_index[i].error_code == "interrupted" for i in unknown)
        assert status.counts["accepted"] == RECIPIENTS - len(unknown)
    else:
        assert not unknown and status.counts["accepted"] == RECIPIENTS
        assert set(counts) == {sandbox_number(n) for n in numbers}
        twice = {number for number, n in counts.items() if n > 1}
        assert twice <= {sandbox_number(numbers[i]) for i in interrupted_indices}
        assert max(counts.values()) <= 2
        for o in outcomes:
            assert o.provider_message_id in ids[sandbox_number(numbers[o.index])]
    # The dead process's chunks came back through the watchdog and their
    # leases, well before the visibility timeout.
    assert after_kill_s < RECOVERY_S + 15
