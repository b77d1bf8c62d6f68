"""Prometheus metrics: what each record function counts, and the
multiprocess set-up a Celery prefork worker relies on (forked children
record, the parent serves their sum)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

from producer.core.store import StoredOutcome
from worker.ops import metrics


@dataclass(frozen=True)
class FakeAccount:
    name: str
    kind: str


ACCOUNT = FakeAccount("ro-unit", "gosms")


def sample(name: str, **labels: str) -> float:
    value = metrics.local_registry().get_sample_value(
        name, {"account": ACCOUNT.name, "kind": ACCOUNT.kind, **labels}
    )
    return value or 0.0


def test_port_defaults_to_9808_zero_is_off_and_garbage_names_the_variable() -> None:
    assert metrics.metrics_port({}) == 9808
    assert metrics.metrics_port({"SMSBULK_METRICS_PORT": "0"}) == 0
    assert metrics.metrics_port({"SMSBULK_METRICS_PORT": " 9100 "}) == 9100
    for bad in ("x", "-1", "70000"):
        with pytest.raises(metrics.MetricsConfigError, match="SMSBULK_METRICS_PORT"):
            metrics.metrics_port({"SMSBULK_METRICS_PORT": bad})


@pytest.mark.parametrize(
    ("http_status", "outcome"),
    [(200, "ok"), (202, "ok"), (400, "client_error"), (401, "client_error"),
     (429, "throttled"), (500, "server_error"), (503, "server_error"), (None, "no_answer")],
)  # fmt: skip
def test_requests_are_classed_by_http_answer(http_status: int | None, outcome: str) -> None:
    assert metrics.outcome_class(http_status) == outcome


def test_a_request_records_latency_size_and_parts() -> None:
    before = sample("smsbulk_provider_request_duration_seconds_count", outcome="throttled")
    metrics.record_request(ACCOUNT, 0.2, recipients=40, parts=80, http_status=429)
    assert sample("smsbulk_provider_request_duration_seconds_count", outcome="throttled") == (
        before + 1
    )
    assert sample("smsbulk_provider_request_duration_seconds_bucket", outcome="throttled",
                  le="0.25") >= 1  # fmt: skip
    assert sample("smsbulk_provider_request_recipients_bucket", le="50.0") >= 1
    assert sample("smsbulk_provider_request_parts_sum") >= 80


def test_committed_outcomes_count_final_statuses_and_pending_as_retries() -> None:
    accepted = sample("smsbulk_recipients_total", status="accepted")
    rejected = sample("smsbulk_recipients_total", status="rejected")
    retries = sample("smsbulk_retries_total")
    outcomes = [StoredOutcome("accepted")] * 3 + [StoredOutcome("rejected")]
    metrics.record_committed(
        ACCOUNT, [*outcomes, StoredOutcome("pending"), StoredOutcome("pending")]
    )
    assert sample("smsbulk_recipients_total", status="accepted") == accepted + 3
    assert sample("smsbulk_recipients_total", status="rejected") == rejected + 1
    assert sample("smsbulk_retries_total") == retries + 2
    assert sample("smsbulk_recipients_total", status="pending") == 0


def test_rate_waits_throttles_and_requests_in_flight() -> None:
    metrics.record_rate_wait(ACCOUNT, 0.3, deferred=False)
    metrics.record_rate_wait(ACCOUNT, 4.0, deferred=True)
    metrics.record_rate_wait(ACCOUNT, 0.0, deferred=True)  # no wait: nothing recorded
    assert sample("smsbulk_rate_limit_wait_seconds_sum", mode="inline") >= 0.3
    assert sample("smsbulk_rate_limit_wait_seconds_count", mode="deferred") == 1
    throttled = sample("smsbulk_throttled_total")
    metrics.record_throttle(ACCOUNT)
    assert sample("smsbulk_throttled_total") == throttled + 1
    with metrics.in_flight(ACCOUNT):
        assert sample("smsbulk_provider_requests_in_flight") == 1
    assert sample("smsbulk_provider_requests_in_flight") == 0


def test_the_circuit_gauge_is_1_while_open_and_0_when_closed() -> None:
    metrics.set_circuit_open(ACCOUNT, True)
    assert sample("smsbulk_account_circuit_open") == 1
    metrics.set_circuit_open(ACCOUNT, False)
    assert sample("smsbulk_account_circuit_open") == 0
    # One state in Redis, written by whichever process saw it change: the
    # latest write is the value, whatever process made it (dead ones too).
    gauge = metrics.local_registry()._names_to_collectors["smsbulk_account_circuit_open"]
    assert gauge._multiprocess_mode == "mostrecent"  # type: ignore[attr-defined]


# Run in a fresh interpreter: multiprocess mode must be chosen before
# prometheus_client is first imported, as in a worker's main process.
_FORKED = textwrap.dedent(
    """
    import multiprocessing, os, signal, sys, urllib.request
    from dataclasses import dataclass
    from pathlib import Path

    from worker.ops import metrics
    from worker.dev.launcher import free_port
    from worker.ops.metrics_server import start_metrics_server

    # Importing our modules must not import prometheus_client (it would
    # choose single-process mode before the directory is set).
    assert "prometheus_client" not in sys.modules

    @dataclass(frozen=True)
    class A:
        name: str = "ro"
        kind: str = "gosms"

    def record(ready):
        metrics.child_started()
        metrics.record_outcomes(A(), {"accepted": 10, "pending": 4})
        metrics.record_request(A(), 0.05, 10, 10, 200)
        metrics.child_stopping()
        ready.set()

    def hang(ready):
        metrics.child_started()
        with metrics.in_flight(A()):
            ready.set()
            signal.pause()

    os.environ["SMSBULK_METRICS_PORT"] = str(free_port())
    server = start_metrics_server("127.0.0.1")
    fork = multiprocessing.get_context("fork")
    done = [fork.Event() for _ in range(3)]
    children = [fork.Process(target=record, args=(e,)) for e in done]
    stuck_ready = fork.Event()
    stuck = fork.Process(target=hang, args=(stuck_ready,))
    for child in [*children, stuck]:
        child.start()
    for child in children:
        child.join(30)
    assert stuck_ready.wait(30)

    def scrape():
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.read().decode()

    print("LIVE", scrape(), sep="\\n")
    os.kill(stuck.pid, signal.SIGKILL)
    stuck.join(30)
    print("AFTER_KILL", scrape(), sep="\\n")
    directory = server.directory
    server.stop()
    print("DIR_REMOVED", not Path(directory).exists())
    print("ENV_RESTORED", "PROMETHEUS_MULTIPROC_DIR" not in os.environ)
    """
)


def test_forked_children_add_up_on_the_parents_endpoint_and_dead_ones_are_not_in_flight() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    result = subprocess.run(
        [sys.executable, "-c", _FORKED], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    live_text, _, rest = result.stdout.partition("AFTER_KILL")
    live_text = live_text.split("LIVE", 1)[1]
    live, after_kill = scraped(live_text), scraped(rest)
    ro = (("account", "ro"), ("kind", "gosms"))
    for seen in (live, after_kill):
        assert seen["smsbulk_recipients_total", (*ro, ("status", "accepted"))] == 30
        assert ("smsbulk_recipients_total", (*ro, ("status", "pending"))) not in seen
        assert (
            seen["smsbulk_provider_request_duration_seconds_count", (*ro, ("outcome", "ok"))] == 3
        )
    assert live["smsbulk_provider_requests_in_flight", ro] == 1
    # The killed child's request is not in flight any more.
    assert after_kill.get(("smsbulk_provider_requests_in_flight", ro), 0) == 0
    assert "DIR_REMOVED True" in rest and "ENV_RESTORED True" in rest


def scraped(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.split("DIR_REMOVED")[0])
        for s in family.samples
    }


_BIND = textwrap.dedent(
    """
    from worker.dev.launcher import free_port
    from worker.ops.metrics_server import MetricsPortBusy, start_metrics_server
    import os

    os.environ["SMSBULK_METRICS_PORT"] = str(free_port())
    try:
        server = start_metrics_server()
    except MetricsPortBusy as error:
        print("REFUSED", error)
    else:
        print("BOUND", server.server.server_address[0])
        server.stop()
    """
)


@pytest.mark.parametrize(
    ("host", "printed"),
    [
        (None, "BOUND 127.0.0.1"),
        ("", "BOUND 127.0.0.1"),
        ("0.0.0.0", "BOUND 0.0.0.0"),
        ("203.0.113.7", "REFUSED cannot serve metrics on 203.0.113.7:"),  # not this host's
    ],
)
def test_metrics_bind_to_smsbulk_metrics_host_loopback_by_default(
    host: str | None, printed: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.pop("SMSBULK_METRICS_HOST", None)
    if host is not None:
        env["SMSBULK_METRICS_HOST"] = host
    result = subprocess.run(
        [sys.executable, "-c", _BIND], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(printed), result.stdout
    if printed.startswith("REFUSED"):
        assert "SMSBULK_METRICS_HOST" in result.stdout
