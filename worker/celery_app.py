"""The Celery app: ``celery -A worker.celery_app worker`` / ``flower``.

Broker settings follow kombu's measured behaviour (docs/ARCHITECTURE.md,
"Measured facts"): acks late, reject on worker lost,
prefetch 1, a hard time limit well under the visibility timeout, and the
visibility timeout equal to ``recovery_s`` so that a killed worker's chunks
come back within it. JSON only: no pickle ever reaches a worker.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from celery import Celery, concurrency, signals
from redis.exceptions import ConnectionError as RedisConnectionError

from producer.accounts import read_config_file
from producer.client import connect, redis_url_from_env
from producer.core import keys
from producer.core.connection import celery_settings, certificate_refused
from producer.errors import ConfigError
from worker.ops.acks import closed_connection_fails_as_connection_error
from worker.ops.config import SettingsTable, parse_settings
from worker.ops.timing import DAY_S, Timing

if TYPE_CHECKING:
    from worker.background.periodic import Periodic


def _settings() -> SettingsTable:
    # Flower and `celery inspect` import this module too; they need only
    # [settings], so accounts are validated at worker start, not here.
    path = os.environ.get("SMSBULK_CONFIG")
    if not path:
        return SettingsTable()
    try:
        return parse_settings(read_config_file(path))
    except ConfigError:
        return SettingsTable()


SETTINGS = _settings()
TIMING = Timing.from_recovery(SETTINGS.recovery_s)

_transport: dict[str, Any] = {
    "visibility_timeout": TIMING.visibility_timeout_s,
    "unacked_restore_throttle": 1,
    "socket_timeout": 30,
    "socket_connect_timeout": 5,
    "health_check_interval": 25,
    "retry_on_timeout": True,
    # Poll the queues in the order a worker lists them: high priority first.
    "queue_order_strategy": "priority",
}

# The URL's form (TLS, Sentinel) decides the broker's and backend's URLs and
# their TLS or Sentinel options (producer/core/connection.py).
_urls = celery_settings(redis_url_from_env())
_transport.update(_urls.pop("broker_transport_options", {}))
_backend_transport = {"visibility_timeout": TIMING.visibility_timeout_s}
_backend_transport.update(_urls.pop("result_backend_transport_options", {}))

# A broker connection Celery closed must not kill the worker (worker/ops/acks.py).
closed_connection_fails_as_connection_error()
# `--pool=threads` (the default worker's) runs high-priority tasks first
# among those waiting for a thread (worker/ops/priority_pool.py).
concurrency.ALIASES["threads"] = "worker.ops.priority_pool:TaskPool"
app = Celery("smsbulk", broker=_urls.pop("broker_url"), include=["worker.tasks"])
app.conf.update(
    **_urls,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=24 * 3600,
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_acks_on_failure_or_timeout=True,
    worker_prefetch_multiplier=1,
    # A pool process sends one chunk at a time and waits for the provider and
    # Redis in between, so one process a core leaves the cores idle: on 2
    # cores, 100,000 sendbulk at 100 ms a request went at 11,400/s with 2
    # processes, 22,700/s with 4 (1,000,000 at 0 ms: 27,500-31,100/s with 2,
    # 31,600-32,200/s with 4). --concurrency overrides it. This is Celery's
    # prefork pool (`--pool=prefork`, `celery -A worker.celery_app worker`);
    # `smsbulk worker`'s default is worker/supervisor.py.
    worker_concurrency=2 * (os.cpu_count() or 1),
    task_time_limit=TIMING.task_time_limit_s,
    task_soft_time_limit=TIMING.task_time_limit_s - 2,
    broker_transport_options=_transport,
    result_backend_transport_options=_backend_transport,
    visibility_timeout=TIMING.visibility_timeout_s,
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_default_queue=keys.NORMAL_QUEUE,
    task_create_missing_queues=True,
    worker_hijack_root_logger=False,
    worker_soft_shutdown_timeout=30,
    # Our tasks are idempotent (chunk lease, request states, fenced commits):
    # let a task that lost the broker finish and record what it sent.
    worker_cancel_long_running_tasks_on_connection_loss=False,
    broker_connection_retry_on_startup=True,
)


@signals.setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    # Connecting here stops Celery from configuring logging itself.
    import logging

    from worker.ops.logs import configure_logging

    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    configure_logging(level=level or "INFO")


@signals.worker_init.connect
def _check_config(**_: Any) -> None:
    """Fail at start-up, naming the key, if the accounts are misconfigured;
    then publish account names, kinds and prices, and the routes, for
    producers on other hosts, and the accounts' limits for the console."""

    from producer.accounts import AccountInfo, registry_value
    from worker.ops.config import limits_value, load_config
    from worker.providers.registry import adapter_class

    try:
        config = load_config()
    except ConfigError as error:
        # Celery logs and swallows exceptions from signal handlers; exit instead.
        raise SystemExit(f"smsbulk: configuration error: {error}") from None
    client = connect(redis_url_from_env())
    try:
        try:
            client.ping()
        except RedisConnectionError as error:
            if certificate_refused(error):
                raise SystemExit(
                    f"smsbulk: SMSBULK_REDIS_URL: the Redis server's TLS certificate "
                    f"does not verify: {error}"
                ) from None
            raise
        client.hset(
            keys.ACCOUNTS,
            mapping={
                name: registry_value(
                    AccountInfo(
                        name,
                        account.kind,
                        account.sender,
                        account.price_per_part,
                        account.currency,
                        adapter_class(account.kind).kind_info(),
                    )
                )
                for name, account in config.accounts.items()
            },
        )
        client.hset(
            keys.LIMITS,
            mapping={name: limits_value(account) for name, account in config.accounts.items()},
        )
        if config.routes:
            client.hset(
                keys.ROUTES,
                mapping={name: route.to_json() for name, route in config.routes.items()},
            )
        # A (re)started worker may carry fixed credentials: lift the stops.
        client.delete(*(keys.account_block(name) for name in config.accounts))
    finally:
        client.close()


_metrics_server: Any = None
_metrics_problem: str | None = None


@signals.worker_init.connect
def _start_metrics(**_: Any) -> None:
    """Serve /metrics from the main process, and set the pool's metrics
    directory before the pool forks (worker/ops/metrics.py explains the order)."""
    global _metrics_server, _metrics_problem

    from worker.ops.metrics import MetricsConfigError
    from worker.ops.metrics_server import MetricsPortBusy, start_metrics_server

    try:
        _metrics_server = start_metrics_server()
    except MetricsConfigError as error:
        raise SystemExit(f"smsbulk: configuration error: {error}") from None
    except MetricsPortBusy as error:
        _metrics_problem = str(error)  # logged once logging is set up


@signals.worker_ready.connect
def _report_metrics(**_: Any) -> None:
    from worker.ops.logs import get_logger

    if _metrics_server is not None:
        get_logger().info("metrics_served", host=_metrics_server.host, port=_metrics_server.port)
    elif _metrics_problem:
        get_logger().warning("metrics_not_served", error=_metrics_problem)


@signals.worker_shutdown.connect
def _stop_metrics(**_: Any) -> None:
    if _metrics_server is not None:
        _metrics_server.stop()


@signals.worker_process_init.connect
def _child_metrics(**_: Any) -> None:
    from worker.ops import metrics

    metrics.child_started()


@signals.worker_process_shutdown.connect
def _child_metrics_done(**_: Any) -> None:
    from worker.ops import metrics

    metrics.child_stopping()


# The main process's background threads (each has ``start`` and ``stop``):
# started when the worker is ready, stopped when it shuts down.
_background: list[Periodic] = []


@signals.worker_ready.connect
def _start_releaser(**_: Any) -> None:
    """Release scheduled jobs and parked chunks from this worker's main process."""
    from producer.client import enqueue_chunk, enqueue_plan, queue_for
    from producer.core.settings import priority_of
    from worker.background.releaser import Releaser
    from worker.ops.logs import get_logger

    client = connect(redis_url_from_env())
    log = get_logger()

    def enqueue(job_id: str) -> None:
        raw = client.hget(keys.job(job_id), "spec")
        priority = priority_of(raw)
        enqueue_plan(app, job_id, priority)
        log.info("job_released", job_id=job_id)

    def unpark(job_id: str, chunk_no: int) -> None:
        priority = priority_of(client.hget(keys.job(job_id), "spec"))
        enqueue_chunk(app, job_id, chunk_no, queue_for(priority))

    _run_in_background(Releaser(client, enqueue, unpark))


@signals.worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    """Remove jobs past ``retention_days`` from this worker's main process."""
    from worker.background.retention import Sweeper

    _run_in_background(Sweeper(connect(redis_url_from_env()), SETTINGS.retention_days * DAY_S))


@signals.worker_ready.connect
def _start_watchdog(**_: Any) -> None:
    """Re-enqueue tasks the broker lost (worker/background/watchdog.py) from this
    worker's main process."""
    from producer.client import enqueue_cancel, enqueue_chunk, enqueue_plan
    from worker.background.watchdog import Watchdog

    _run_in_background(
        Watchdog(
            connect(redis_url_from_env()),
            stall_s=TIMING.visibility_timeout_s,
            enqueue_plan=lambda job_id, priority: enqueue_plan(app, job_id, priority),
            enqueue_chunk=lambda job_id, chunk_no, queue: enqueue_chunk(
                app, job_id, chunk_no, queue
            ),
            enqueue_cancel=lambda job_id, priority: enqueue_cancel(app, job_id, priority),
        )
    )


def _run_in_background(thread: Periodic) -> None:
    thread.start()
    _background.append(thread)


@signals.worker_shutdown.connect
def _stop_background(**_: Any) -> None:
    for thread in _background:
        thread.stop()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _close_runtime(**_: Any) -> None:
    """A prefork child closes its runtime as it ends; a threads pool's
    runtime is the main process's, closed as the worker shuts down."""
    from worker.runtime import close_runtime

    close_runtime()
