"""``smsbulk worker`` with its defaults: a supervisor of one threads-pool
worker a core (worker/supervisor.py). SIGKILL of one child with chunks in
flight: the supervisor starts another, the job completes, nothing is sent
twice (at most once). SIGTERM of the supervisor: every child shuts down warm
and the supervisor exits 0; a killed supervisor takes its children with it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from tests.integration.stack import own_server_stack, ro_numbers
from tests.integration.test_crash_safety import (
    accepted_so_far,
    pool_children,
    request_states,
    sending,
    submit,
)
from worker.dev.launcher import wait_until

pytestmark = pytest.mark.integration

RECOVERY_S = 30
THREADS = 4
RECIPIENTS = 6_000
LATENCY_MS = 300
ACCOUNT = {"batch_size": 100, "messages_per_second": 1_000_000, "requests_per_second": 10_000}
SETTINGS = f"\n[settings]\nrecovery_s = {RECOVERY_S}\n"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _children(pid: int, count: int) -> list[int]:
    wait_until(lambda: len(pool_children(pid)) == count, 30, f"{count} worker processes")
    return pool_children(pid)


@pytest.mark.timeout(200)
def test_a_killed_child_is_replaced_and_the_job_completes_sending_nothing_twice(
    tmp_path: Path,
) -> None:
    with own_server_stack(
        tmp_path / "stack",
        workers=0,
        accounts={"crash": ACCOUNT},
        settings_toml=SETTINGS,
        sandbox_args=("--latency-ms", str(LATENCY_MS)),
    ) as stack:
        supervisor = stack.add_worker(THREADS, "--processes=2")
        first = _children(supervisor.pid, 2)
        client: redis.Redis = stack.redis()
        job_id = submit(stack, ro_numbers(RECIPIENTS), "at_most_once", "crash")

        def busy() -> bool:
            return accepted_so_far(client, job_id) >= RECIPIENTS // 5 and bool(
                sending(request_states(client, job_id))
            )

        wait_until(busy, 60, "requests in flight", 0.005)
        victim = first[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in pool_children(supervisor.pid), 10, "the victim to go")
        replaced = _children(supervisor.pid, 2)
        status = stack.wait_for(job_id, 120)
        stats = stack.sandbox_get("/_sandbox/stats")
        assert supervisor.alive()

        # SIGTERM: the children stop warm, then the supervisor exits 0.
        supervisor.popen.send_signal(signal.SIGTERM)
        code = supervisor.popen.wait(60)
        stack.workers.remove(supervisor)
        supervisor.stop()  # closes its log
        children_left = [pid for pid in replaced if _alive(pid)]

    assert victim not in replaced and first[1] in replaced
    assert status.state == "completed" and status.counts["pending"] == 0
    assert stats["duplicates"] == 0
    assert status.counts["accepted"] + status.counts["unknown"] == RECIPIENTS
    assert code == 0 and children_left == []


@pytest.mark.timeout(120)
def test_a_killed_supervisor_takes_its_children_with_it(tmp_path: Path) -> None:
    with own_server_stack(
        tmp_path / "stack", workers=0, accounts={"crash": ACCOUNT}, settings_toml=SETTINGS
    ) as stack:
        supervisor = stack.add_worker(THREADS, "--processes=2")
        children = _children(supervisor.pid, 2)
        os.kill(supervisor.pid, signal.SIGKILL)
        supervisor.popen.wait(10)
        deadline = time.monotonic() + 45
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [pid for pid in children if _alive(pid)]
        stack.workers.remove(supervisor)
        supervisor.stop()
    assert left == []
