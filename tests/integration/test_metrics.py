"""A real worker's /metrics (prefork, and smsbulk's default supervisor):
what its processes recorded while a job ran against the sandbox, with
throttling and a tight rate limit."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.stack import Stack, make_stack, ro_numbers
from worker.dev.launcher import free_port, port_open, wait_until

pytestmark = pytest.mark.integration

# requests_per_second and burst_s make the limiter wait; batch_size makes
# several requests of one job.
SLOW = {
    "batch_size": 5,
    "messages_per_second": 100000,
    "requests_per_second": 20,
    "burst_s": 0.1,
    "retry_base_s": 0.2,
    "retry_max_s": 1,
    "max_attempts": 10,
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


# Celery's prefork pool (the main process adds up its pool processes), and
# smsbulk's default (the supervisor adds up its threads-pool workers).
WORKERS = {"prefork": (2,), "default": (4, "--processes=2")}


@pytest.fixture(params=sorted(WORKERS))
def stack(
    valkey: object, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Stack, int]]:
    url = valkey.connection_url  # type: ignore[attr-defined]
    redis.Redis.from_url(url).flushall()
    built = make_stack(
        url,
        tmp_path_factory.mktemp("metrics"),
        workers=0,  # started once the metrics port is in their environment
        sandbox_args=("--throttle-rate", "0.2"),
        accounts={"slow": SLOW},
    )
    try:
        # Seeded (one draw per request): the first request is answered 429.
        built.sandbox_post("/_sandbox/settings", {"seed": 1})
        port = free_port()
        built.env["SMSBULK_METRICS_PORT"] = str(port)
        worker = built.add_worker(*WORKERS[request.param])
        wait_until(lambda: port_open(port) or not worker.alive(), 60, "the metrics port")
        yield built, port
    finally:
        built.stop()


def scrape(port: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def test_pool_processes_record_and_the_main_process_serves_the_sum(
    stack: tuple[Stack, int],
) -> None:
    built, port = stack
    numbers = ro_numbers(40)
    job_id = built.producer().submit(
        {
            "provider": "slow",
            "text": "Your code is 4411",
            "messages": [{"to": n} for n in numbers] + [{"to": "12"}],
        }
    )
    status = built.wait_for(job_id)
    assert status.counts["accepted"] == 40 and status.counts["rejected"] == 1
    stats = built.sandbox_get("/_sandbox/stats")
    throttled = stats["requests"] - stats["processed_requests"]
    assert throttled > 0, stats

    text, samples = scrape(port)
    slow = (("account", "slow"), ("kind", "sendbulk"))

    def value(name: str, *labels: tuple[str, str]) -> float:
        return samples.get((name, tuple(sorted((*slow, *labels)))), 0.0)

    assert value("smsbulk_recipients_total", ("status", "accepted")) == 40
    assert value("smsbulk_recipients_total", ("status", "rejected")) == 1
    assert value("smsbulk_throttled_total") == throttled
    # Each throttled request set its recipients back to pending.
    assert value("smsbulk_retries_total") >= throttled
    duration = "smsbulk_provider_request_duration_seconds_count"
    assert value(duration, ("outcome", "throttled")) == throttled
    assert value(duration, ("outcome", "ok")) == stats["processed_requests"]
    size = "smsbulk_provider_request_recipients_bucket"
    assert value(size, ("le", "5.0")) == value(size, ("le", "+Inf")) == stats["requests"]
    assert value("smsbulk_provider_request_parts_sum") >= 40
    waits = sum(
        value("smsbulk_rate_limit_wait_seconds_count", ("mode", mode))
        for mode in ("inline", "deferred")
    )
    assert waits > 0
    assert value("smsbulk_provider_requests_in_flight") == 0
    # No per-job or per-number labels, nothing of the job in the text.
    assert job_id not in text and not any(n in text for n in numbers)
    assert {k for _, labels in samples for k, _ in labels} <= {
        "account", "kind", "status", "outcome", "mode", "le",
    }  # fmt: skip
