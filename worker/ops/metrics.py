"""Prometheus metrics, recorded in every pool process, served by the main one.

Celery's prefork children each count what they send. prometheus_client's
multiprocess mode keeps each process's values in files of one directory
(``PROMETHEUS_MULTIPROC_DIR``), and the worker's main process adds them up
on ``/metrics`` (``worker.ops.metrics_server``). prometheus_client chooses
between memory and files once, when it is first imported, and the pool
forks after Celery has imported our tasks: so this module never imports it
at the top, and ``worker.celery_app`` sets the directory at ``worker_init``
(main process, before the fork). Each process builds its metric objects on
first use, keyed by pid like ``worker.runtime``.

Labels are account names, provider kinds, recipient statuses and outcome
classes: never a job id or a number, so the series stay few.
"""

from __future__ import annotations

import os
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from producer.core.store import StoredOutcome
from producer.errors import SmsbulkError
from producer.job import FINAL_STATUSES

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PORT_ENV = "SMSBULK_METRICS_PORT"
DEFAULT_PORT = 9808
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
RECIPIENT_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
PART_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
WAIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)


class MetricsConfigError(SmsbulkError):
    """SMSBULK_METRICS_PORT is malformed."""


class AccountLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...


def metrics_port(environ: Mapping[str, str] = os.environ) -> int:
    """The port to serve on: SMSBULK_METRICS_PORT, default 9808; 0 means off."""
    raw = environ.get(PORT_ENV, "").strip()
    if not raw:
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise MetricsConfigError(f"{PORT_ENV}: must be a port number 0-65535 (0: off), not {raw!r}")
    return port


def outcome_class(http_status: int | None) -> str:
    """A provider request's outcome, by HTTP class: few values, fit for a label."""
    if http_status is None:
        return "no_answer"  # never connected, or the answer was lost
    if http_status == 429:
        return "throttled"
    if 200 <= http_status < 300:
        return "ok"
    if 400 <= http_status < 500:
        return "client_error"
    if http_status >= 500:
        return "server_error"
    return "other"


@dataclass(frozen=True, slots=True)
class _Metrics:
    pid: int
    registry: CollectorRegistry  # this process's own; /metrics reads the files
    recipients: Counter
    request_duration: Histogram
    request_recipients: Histogram
    request_parts: Histogram
    in_flight: Gauge
    retries: Counter
    rate_wait: Histogram
    throttled: Counter
    circuit_open: Gauge


_current: _Metrics | None = None


def _build() -> _Metrics:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    registry = CollectorRegistry()
    account = ["account", "kind"]
    return _Metrics(
        pid=os.getpid(),
        registry=registry,
        recipients=Counter(
            "smsbulk_recipients",
            "Recipients that reached a final status, by account and status.",
            [*account, "status"],
            registry=registry,
        ),
        request_duration=Histogram(
            "smsbulk_provider_request_duration_seconds",
            "Provider request latency, by account and outcome class.",
            [*account, "outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        ),
        request_recipients=Histogram(
            "smsbulk_provider_request_recipients",
            "Recipients per provider request.",
            account,
            buckets=RECIPIENT_BUCKETS,
            registry=registry,
        ),
        request_parts=Histogram(
            "smsbulk_provider_request_parts",
            "SMS parts per provider request (what the rate limit counts).",
            account,
            buckets=PART_BUCKETS,
            registry=registry,
        ),
        in_flight=Gauge(
            "smsbulk_provider_requests_in_flight",
            "Provider requests sent and not yet answered.",
            account,
            multiprocess_mode="livesum",
            registry=registry,
        ),
        retries=Counter(
            "smsbulk_retries",
            "Recipients set back to pending for another attempt.",
            account,
            registry=registry,
        ),
        rate_wait=Histogram(
            "smsbulk_rate_limit_wait_seconds",
            "Time a request waited for rate-limit capacity: inline, or deferred to a later pass.",
            [*account, "mode"],
            buckets=WAIT_BUCKETS_S,
            registry=registry,
        ),
        throttled=Counter(
            "smsbulk_throttled",
            "Provider answers HTTP 429 (throttling).",
            account,
            registry=registry,
        ),
        # The circuit is one state in Redis: each process writes it when its
        # view changes, and the most recent write across processes (dead ones
        # too: a transition stays true after its writer ends) is the value.
        circuit_open=Gauge(
            "smsbulk_account_circuit_open",
            "1 while the account's circuit breaker is open (failing over), else 0.",
            account,
            multiprocess_mode="mostrecent",
            registry=registry,
        ),
    )


def _metrics() -> _Metrics:
    global _current
    if _current is None or _current.pid != os.getpid():
        _current = _build()
    return _current


def local_registry() -> CollectorRegistry:
    """This process's metrics (tests; in a worker, /metrics adds up every process)."""
    return _metrics().registry


def record_request(
    account: AccountLike, latency_s: float, recipients: int, parts: int, http_status: int | None
) -> None:
    m = _metrics()
    m.request_duration.labels(account.name, account.kind, outcome_class(http_status)).observe(
        latency_s
    )
    m.request_recipients.labels(account.name, account.kind).observe(recipients)
    m.request_parts.labels(account.name, account.kind).observe(parts)


@contextmanager
def in_flight(account: AccountLike) -> Iterator[None]:
    gauge = _metrics().in_flight.labels(account.name, account.kind)
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


def record_outcomes(account: AccountLike, statuses: Mapping[str, int]) -> None:
    """Count recipients by final status (other statuses are ignored)."""
    m = _metrics()
    for status, n in statuses.items():
        if n and status in FINAL_STATUSES:
            m.recipients.labels(account.name, account.kind, status).inc(n)


def record_retries(account: AccountLike, n: int) -> None:
    if n:
        _metrics().retries.labels(account.name, account.kind).inc(n)


def record_committed(account: AccountLike, outcomes: Iterable[StoredOutcome]) -> None:
    """Outcomes a sending pass has just written: final ones count by status,
    ``pending`` ones are recipients set back for another attempt."""
    tally = Tally(outcome.status for outcome in outcomes)
    record_outcomes(account, tally)
    record_retries(account, tally.get("pending", 0))


def record_rate_wait(account: AccountLike, seconds: float, deferred: bool) -> None:
    if seconds > 0:
        mode = "deferred" if deferred else "inline"
        _metrics().rate_wait.labels(account.name, account.kind, mode).observe(seconds)


def record_throttle(account: AccountLike) -> None:
    _metrics().throttled.labels(account.name, account.kind).inc()


def set_circuit_open(account: AccountLike, is_open: bool) -> None:
    _metrics().circuit_open.labels(account.name, account.kind).set(1 if is_open else 0)


def child_stopping() -> None:
    """A pool process ends: drop its live gauge files (``worker_process_shutdown``)."""
    path = os.environ.get(MULTIPROC_ENV)
    if path and os.path.isdir(path):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


def child_started() -> None:
    """A pool process starts (``worker_process_init``): build its metrics now,
    under the directory it inherited, rather than on its first request."""
    _metrics()
