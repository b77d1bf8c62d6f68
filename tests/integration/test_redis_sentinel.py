"""``redis+sentinel://`` (issue 16): a real master, its replica and three
Sentinels (valkey-server, ``--sentinel``) on 127.0.0.1; a 50,000-recipient
job; the master SIGKILLed mid-job and the replica promoted. The broker, the
store and the limiter follow the new master: the job completes with every
recipient final. Whatever the master had not yet passed on to the replica
is lost with it: with ``durable_sends`` off a request begun there may be
sent again (counted and printed); with it on, none is.

`recovery_s` is 30 (visibility timeout 20 s: tasks the dead master held
come back through the watchdog within it). Every wait has a time limit;
the rig and the stack are stopped by the test.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from producer.core import keys
from producer.job import FINAL_STATUSES
from tests.integration.redis_servers import sentinel_rig
from tests.integration.stack import Stack, elapsed, make_stack, ro_numbers
from worker.dev.launcher import wait_until

pytestmark = pytest.mark.integration

BIG_JOB = 50_000
LATENCY_MS = 200
ACCOUNT = {"batch_size": 500, "messages_per_second": 1_000_000, "requests_per_second": 10_000}


def sent_counts(stack: Stack) -> Counter[str]:
    return Counter(row["number"] for row in stack.sandbox_get("/_sandbox/sent?kind=sendbulk"))


@pytest.mark.parametrize("durable", [False, True], ids=["durable_sends-off", "durable_sends-on"])
def test_a_job_completes_across_a_failover(durable: bool, tmp_path: Path) -> None:
    with sentinel_rig(tmp_path / "redis") as rig:
        settings = f"\n[settings]\nrecovery_s = 30\ndurable_sends = {str(durable).lower()}\n"
        stack = make_stack(
            rig.url,
            tmp_path / "stack",
            workers=2,
            accounts={"fo": ACCOUNT},
            settings_toml=settings,
            sandbox_args=("--latency-ms", str(LATENCY_MS)),
        )
        client = stack.redis()
        try:
            producer = stack.producer()
            try:
                job_id = producer.submit(
                    {
                        "provider": "fo",
                        "text": "Your code is 1234",
                        "delivery_policy": "at_most_once",
                        "messages": [{"to": n} for n in ro_numbers(BIG_JOB)],
                    }
                )
            finally:
                producer.close()
            wait_until(
                lambda: int(client.hget(keys.job(job_id), "n:a") or 0) >= BIG_JOB // 4,
                120,
                "a quarter of the job sent",
            )
            if durable:  # with a replica connected, each request waited for it
                with redis.Redis(port=rig.master_port) as master:
                    assert master.info("commandstats")["cmdstat_wait"]["calls"] >= 1
            rig.master.kill_group()
            killed = time.monotonic()
            status = stack.wait_for(job_id, 240)
            took_s = elapsed(killed)
            assert rig.master_now() == rig.replica_port  # the replica was promoted
            assert status.state == "completed"
            assert sum(status.counts.get(s, 0) for s in FINAL_STATUSES) == BIG_JOB
            counts = sent_counts(stack)
            twice = sum(1 for n in counts.values() if n > 1)
            print(
                f"\nfailover, durable_sends {'on' if durable else 'off'}: job ended "
                f"{took_s:.1f} s after the kill; {twice} recipients sent twice; "
                f"counts {dict(status.counts)}"
            )
            if durable:
                assert twice == 0
        finally:
            client.close()
            stack.stop()
