"""``[settings] durable_sends`` (issue 16) against a real Valkey and real
workers: with an append-only file (``appendfsync everysec``) every request
waits for ``WAITAOF`` and goes; on a server where neither a replica nor an
append-only file can have a request's ``sending`` state, nothing is sent
and no recipient is lost: they stay pending, passes come back, and once
the server can (``CONFIG SET appendonly yes``) they go, each once."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from producer import Producer
from tests.integration.stack import Stack, make_stack, ro_numbers
from worker.dev.launcher import start_valkey, wait_until

pytestmark = pytest.mark.integration

DURABLE = "\n[settings]\nrecovery_s = 30\ndurable_sends = true\n"
BATCH = 50
ACCOUNTS = {"d": {"batch_size": BATCH, "messages_per_second": 100_000, "requests_per_second": 1000}}


def submit(stack: Stack, count: int) -> str:
    producer = stack.producer()
    try:
        return producer.submit(
            {"provider": "d", "text": "hi", "messages": [{"to": n} for n in ro_numbers(count)]}
        )
    finally:
        producer.close()


def sent_counts(stack: Stack) -> Counter[str]:
    return Counter(row["number"] for row in stack.sandbox_get("/_sandbox/sent?kind=sendbulk"))


def test_with_an_append_only_file_every_request_waits_for_it_and_goes(tmp_path: Path) -> None:
    valkey = start_valkey(appendonly=True)
    stack = make_stack(
        valkey.connection_url, tmp_path, workers=1, settings_toml=DURABLE, accounts=ACCOUNTS
    )
    client = redis.Redis.from_url(valkey.connection_url)
    try:
        job_id = submit(stack, 1000)
        assert stack.wait_for(job_id, 90).counts["accepted"] == 1000
        counts = sent_counts(stack)
        assert len(counts) == 1000 and set(counts.values()) == {1}
        waits = client.info("commandstats").get("cmdstat_waitaof", {}).get("calls", 0)
        assert waits >= 1000 // BATCH  # one a request
    finally:
        client.close()
        stack.stop()
        valkey.stop()


def test_without_a_replica_or_an_append_only_file_nothing_is_sent(tmp_path: Path) -> None:
    valkey = start_valkey()  # appendonly no, no replica: WAITAOF cannot be had
    stack = make_stack(
        valkey.connection_url, tmp_path, workers=1, settings_toml=DURABLE, accounts=ACCOUNTS
    )
    client = redis.Redis.from_url(valkey.connection_url)
    try:
        job_id = submit(stack, 300)
        wait_until(lambda: '"request_not_durable"' in stack.worker_logs(), 30, "a request not sent")
        time.sleep(3)  # several passes come back meanwhile
        assert sent_counts(stack) == Counter()
        producer = Producer(stack.redis_url)
        try:
            status = producer.status(job_id)
        finally:
            producer.close()
        assert status.state == "running"
        assert status.counts["pending"] == 300
        client.config_set("appendonly", "yes")
        assert stack.wait_for(job_id, 90).counts["accepted"] == 300
        counts = sent_counts(stack)
        assert len(counts) == 300 and set(counts.values()) == {1}
    finally:
        client.close()
        stack.stop()
        valkey.stop()
