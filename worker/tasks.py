"""Celery tasks: submit -> plan -> send chunk (-> send chunk again later).

Every task takes ids, never recipients, texts or credentials, and shows
only ids in Flower (``argsrepr``). Every task is idempotent: Redis can
deliver a task twice, and a killed worker's task is delivered again.
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis
from celery import Task

from producer import control
from producer.accounts import load_accounts
from producer.client import (
    connect,
    enqueue_cancel,
    enqueue_chunk,
    enqueue_plan,
    publish_plan,
    queue_for,
    redis_url_from_env,
)
from producer.core import keys, scripts
from producer.core.settings import job_settings, priority_of, settings_of
from producer.core.states import SENDING_STATES
from producer.core.store import now_s, read_status
from producer.destinations import load_policy
from producer.job import JOB_ID_FORM, JobExists, JobRefused, is_job_id
from producer.submission import store_job
from producer.validation import open_job
from worker.celery_app import TIMING, app
from worker.ops import callbacks
from worker.ops.logs import get_logger
from worker.ops.priority_pool import is_high
from worker.pipeline.cancelling import Sweep, sweep_cancelled
from worker.pipeline.chunking import chunk_count
from worker.pipeline.sending import (
    DURABLE_TIMEOUT_MS,
    ChunkSender,
    PassResult,
    defer_unless_capacity,
    fail_chunk,
)
from worker.providers.registry import kind_infos
from worker.runtime import Lane, Runtime, get_runtime
from worker.store import JobRecord, ResultsStore, new_token

log = get_logger()
CELERY_MAX_MESSAGES = 50_000  # docs/INTERFACE.md: larger jobs go through Python or HTTP
UNKNOWN_ACCOUNT_RETRIES = 10
UNKNOWN_ACCOUNT_RETRY_S = 30
UNEXPECTED_ERROR_RETRIES = 10
UNEXPECTED_ERROR_RETRY_S = 15
CANCEL_LEASE_MARGIN_S = 0.5  # a cancel sweep comes back this long after a busy lease ends
_redis: redis.Redis | None = None


def sync_redis() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = connect(redis_url_from_env())
    return _redis


def _ids_repr(task: Task) -> str:
    """A retry's argument summary, the same ids as the first send's (Celery
    would show ``repr(args)``): ``job_id=J`` or ``job_id=J, chunk=N``."""
    names = ("job_id", "chunk")
    return ", ".join(f"{n}={v}" for n, v in zip(names, task.request.args or (), strict=False))


@app.task(name=keys.SUBMIT_JOB, bind=True, ignore_result=False)
def submit_job(self: Task, job: dict[str, Any]) -> dict[str, Any]:
    """Accept a job from any Celery client. Without a ``job_id`` the task id
    is the job id, so a redelivered submission finds its own job instead of
    making a second one."""
    client = sync_redis()
    task_id = str(self.request.id)
    messages = job.get("messages") if isinstance(job, dict) else None
    if isinstance(messages, list) and len(messages) > CELERY_MAX_MESSAGES:
        error = f"at most {CELERY_MAX_MESSAGES} via Celery; submit larger jobs in Python or HTTP"
        return {"error": "invalid job", "errors": [{"field": "messages", "msg": error}]}
    priority: str
    state: str | None = None  # as stored; read again for a redelivered submission
    try:
        check, messages = open_job(job, load_accounts(client, kinds=kind_infos()), load_policy())
        if check.job_id is None and not is_job_id(task_id):
            # Keys are built from the job id: `acc-q-evil:m:0` would be another job's block.
            log.warning("job_refused_task_id")
            return {"error": f"the task id is not a job id ({JOB_ID_FORM}): give the job a job_id"}
        job_id = check.job_id or task_id
        stored = store_job(client, check, messages, job_id, origin=task_id)
        priority, state = stored.spec.priority, stored.state
        log.info("job_submitted", job_id=job_id, total=check.total)
    except JobRefused as refused:
        log.warning("job_refused", errors=refused.errors)
        return {"error": "invalid job", "errors": refused.errors}
    except JobExists:
        if client.hget(keys.job(job_id), "origin") != task_id.encode():
            log.warning("job_refused_exists", job_id=job_id)
            return {"error": "job exists", "job_id": job_id}
        # Our own submission, delivered again. The job was stored whole (one
        # atomic commit) but perhaps not yet planned; plan_job ignores a
        # second plan task.
        log.info("job_submission_redelivered", job_id=job_id)
        priority = priority_of(cast(bytes | None, client.hget(keys.job(job_id), "spec")))
    publish_plan(client, app, job_id, priority, state)
    return {"job_id": job_id}


@app.task(name=keys.PLAN_JOB, bind=True)
def plan_job(self: Task, job_id: str, first_chunk: int = 0) -> None:
    """Split the job into chunks (index ranges) and enqueue one send task each.

    A task killed by its hard time limit is acked, never delivered again: a
    plan cut short would leave its remaining chunks pending forever. So after
    ``pass_budget_s`` a follow-up plan task enqueues the rest.

    First, a retried job's reset that its caller left unfinished is finished
    (producer/control.py), and a job with nothing left to send is completed
    instead of planned: a job resumed after its last commit landed while it
    was paused, or one that the watchdog found with every chunk done."""
    client = sync_redis()
    raw_spec, raw_state, raw_total, raw_chunk_size = cast(
        list[bytes], client.hmget(keys.job(job_id), ["spec", "state", "total", "chunk_size"])
    )
    if raw_spec is None:
        log.warning("plan_unknown_job", job_id=job_id)
        return
    settings, state, total = settings_of(raw_spec), raw_state.decode(), int(raw_total)
    if state == "scheduled" and (settings.schedule_s or 0.0) > now_s():
        return  # released by the scheduler when due
    client.zrem(keys.SCHEDULED, job_id)
    if not first_chunk and state in SENDING_STATES:
        if not control.continue_retry(client, job_id, TIMING.pass_budget_s):
            client.zadd(keys.ACTIVE, {job_id: now_s()}, xx=True)
            enqueue_plan(app, job_id, settings.priority)  # the rest of the reset
            return
        # A high job's on the high lane: the main loop may be busy with a campaign.
        lane = get_runtime().lane(is_high(self.request.delivery_info))
        if lane.run(_finish_if_final(lane.store, job_id)):
            log.info("job_ended_with_nothing_to_send", job_id=job_id)
            return
    if state not in ("queued", "scheduled") and not (first_chunk and state == "running"):
        return  # planned already (a redelivery), or paused/cancelled
    batch_size = get_runtime().chunk_size_for(settings.provider)
    if batch_size is None:
        _retry_unknown_account(self, job_id, settings.provider)
    chunk_size = int(raw_chunk_size or 0) or batch_size or keys.BLOCK_SIZE
    client.hsetnx(keys.job(job_id), "chunk_size", chunk_size)
    chunk_size = int(cast(bytes, client.hget(keys.job(job_id), "chunk_size")))
    n_chunks = chunk_count(total, chunk_size)
    queue = queue_for(settings.priority)
    # Activity: the watchdog looks for this job's tasks only once it is silent.
    client.zadd(keys.ACTIVE, {job_id: now_s()})
    started = time.monotonic()
    for chunk_no in range(first_chunk, n_chunks):
        if time.monotonic() - started > TIMING.pass_budget_s:
            app.send_task(
                keys.PLAN_JOB,
                args=[job_id, chunk_no],
                queue=queue,
                argsrepr=f"job_id={job_id}, first_chunk={chunk_no}",
            )
            break
        enqueue_chunk(app, job_id, chunk_no, queue)
    else:
        log.info("job_planned", job_id=job_id, chunks=n_chunks, chunk_size=chunk_size)
    # Running once its first chunks are queued, not once the last slice runs.
    scripts.script("mark_running")(keys=[keys.job(job_id)], client=client)


def _retry_unknown_account(task: Task, job_id: str, account: str) -> None:
    """A worker whose configuration lacks the job's account (a rolling
    deploy, say) hands the task back for a while, then gives up: the chunk's
    recipients are then failed, never left pending forever."""
    log.error("account_not_configured", job_id=job_id, account=account)
    if task.request.retries < UNKNOWN_ACCOUNT_RETRIES:
        raise task.retry(
            countdown=UNKNOWN_ACCOUNT_RETRY_S,
            max_retries=UNKNOWN_ACCOUNT_RETRIES,
            argsrepr=_ids_repr(task),
        )


@app.task(name=keys.SEND_CHUNK, bind=True)
def send_chunk(self: Task, job_id: str, chunk_no: int, parts: int = 0) -> None:
    """One pass over a chunk, then the next one enqueued if one is due.

    A pass first takes rate-limit capacity for its first request (of
    ``parts`` parts when a deferral said so), before it reads or parses
    anything: a saturated account's chunks that find none cost one limiter
    call each and go back to wait, with jitter, instead of holding a worker
    process."""
    runtime = get_runtime()
    # From the high queue: on the high lane's loop, from the first await on.
    lane = runtime.lane(is_high(self.request.delivery_info))
    job = lane.run(lane.store.job(job_id))
    if job is None or job.state not in SENDING_STATES:
        return  # gone, paused or cancelled: resume/retry enqueue again
    queue = queue_for(job.settings.priority)
    if runtime.account_for(job.settings.provider) is None:
        _retry_unknown_account(self, job_id, job.settings.provider)
        reason = f"account {job.settings.provider} is not configured on the workers"
        lane.run(fail_chunk(lane.store, job, chunk_no, reason))
        return
    try:
        result = lane.run(_send_chunk(runtime, lane, job, chunk_no, parts))
    except Exception as error:
        # A bug or a long Redis outage: never drop the chunk silently.
        log.exception("chunk_failed", job_id=job_id, chunk=chunk_no)
        if self.request.retries < UNEXPECTED_ERROR_RETRIES:
            raise self.retry(
                countdown=min(UNEXPECTED_ERROR_RETRY_S, TIMING.max_countdown_s),
                max_retries=UNEXPECTED_ERROR_RETRIES,
                argsrepr=_ids_repr(self),
            ) from error
        reason = f"internal error, gave up: {type(error).__name__}"
        lane.run(fail_chunk(lane.store, job, chunk_no, reason))
        return
    wait_s = result.next_pass_in_s
    if wait_s is not None and wait_s > TIMING.max_countdown_s:
        # Too far off for a countdown (a send window opening tonight): parked.
        lane.run(lane.store.park_chunk(job_id, chunk_no, now_s() + wait_s))
        log.info("chunk_parked", job_id=job_id, chunk=chunk_no, due_in_s=round(wait_s))
    elif wait_s is not None:
        enqueue_chunk(app, job_id, chunk_no, queue, wait_s, result.deferred_parts)


async def _send_chunk(
    runtime: Runtime, lane: Lane, job: JobRecord, chunk_no: int, parts: int = 0
) -> PassResult:
    """One pass over the chunk of a job read (and found running) by the task,
    once capacity for its first request is taken (``defer_unless_capacity``),
    on ``lane``'s loop."""
    store = lane.store
    job_id = job.job_id
    token = new_token()
    if not await store.acquire_lease(job_id, chunk_no, token, TIMING.lease_ttl_s):
        # Another delivery holds the chunk: it may be running, or it may have
        # died (a killed pool child's task comes back at once). Look again
        # when its lease runs out; the chunk's state decides what is left.
        busy_s = await store.lease_ttl_s(job_id, chunk_no)
        log.info("chunk_busy", job_id=job_id, chunk=chunk_no, retry_in_s=busy_s)
        return PassResult(next_pass_in_s=min(busy_s + 1, TIMING.max_countdown_s))
    try:
        account = runtime.account_for(job.settings.provider)
        assert account is not None  # send_chunk checked
        route = runtime.route(job.settings.provider)
        deferred = await defer_unless_capacity(
            store, lane.limiter, account, job, chunk_no, parts, TIMING
        )
        if deferred is not None:
            return deferred
        sender = ChunkSender(
            store,
            lane.limiter,
            runtime.adapter(account),
            job,
            chunk_no,
            TIMING,
            lease_token=token,
            prepaid_parts=max(parts, 1),
            route=route,
            adapters=runtime.adapters_for(route) if route else None,
            guards=lane.guards,
            default_timezone=runtime.config.settings.default_timezone,
            durable_ms=DURABLE_TIMEOUT_MS if runtime.config.settings.durable_sends else 0,
        )
        result = await sender.run(lane.session)
        if result.chunk_done:
            await store.mark_chunk_done(job, chunk_no)
    finally:
        await store.release_lease(job_id, chunk_no, token)
    await _callback_if_ended(store, job)
    return result


async def _callback_if_ended(store: ResultsStore, job: JobRecord) -> None:
    if job.settings.callback_url and await store.claim_callback(job.job_id):
        app.send_task(
            keys.SEND_CALLBACK,
            args=[job.job_id],
            queue=keys.HIGH_QUEUE,
            argsrepr=f"job_id={job.job_id}",
        )


async def _finish_if_final(store: ResultsStore, job_id: str) -> bool:
    """End the job if every recipient is final, and send its callback."""
    job = await store.job(job_id)
    if job is None or not await store.finish_if_final(job_id):
        return False
    await _callback_if_ended(store, job)
    return True


@app.task(
    name=keys.CANCEL_JOB,
    autoretry_for=(Exception,),
    max_retries=UNEXPECTED_ERROR_RETRIES,
    default_retry_delay=min(UNEXPECTED_ERROR_RETRY_S, TIMING.max_countdown_s),
)
def cancel_job(job_id: str) -> None:
    """Settle every recipient of a cancelled job that was not sent.

    A sweep never outlasts its time limit: chunks whose lease is still held
    (a pass finishing a request in flight, or a killed worker's lease, which
    outlives a task) are left to this task again, once their leases may have
    run out; an error (a Redis outage, say) retries it. If all that fails
    (the task lost by the broker, or given up), the watchdog publishes it
    again for the silent job."""
    runtime = get_runtime()
    job, sweep = runtime.run(_sweep_cancelled(runtime.store, job_id))
    if job is None or sweep is None:
        return
    if sweep.busy:
        countdown_s = min(sweep.busy_for_s + CANCEL_LEASE_MARGIN_S, TIMING.max_countdown_s)
        log.info(
            "cancel_chunks_busy",
            job_id=job_id,
            chunks=len(sweep.busy),
            recipients=sweep.cancelled,
            retry_in_s=round(countdown_s, 1),
        )
        runtime.run(runtime.store.note_activity(job_id))
        enqueue_cancel(app, job_id, job.settings.priority, countdown_s)
        return
    log.info("job_cancelled", job_id=job_id, recipients=sweep.cancelled)


async def _sweep_cancelled(
    store: ResultsStore, job_id: str
) -> tuple[JobRecord | None, Sweep | None]:
    job = await store.job(job_id)
    if job is None or job.state != "cancelled":
        return job, None
    sweep = await sweep_cancelled(store, job, TIMING.lease_ttl_s, TIMING.pass_budget_s)
    if not sweep.busy:
        await store.finish_if_final(job_id)  # settled: unwatched (even with no chunk to sweep)
        await _callback_if_ended(store, job)
    return job, sweep


@app.task(name=keys.SEND_CALLBACK, bind=True, max_retries=callbacks.MAX_ATTEMPTS - 1)
def send_callback(self: Task, job_id: str) -> None:
    """POST the ended job's status to its callback_url, signed; retried."""
    runtime = get_runtime()
    client = sync_redis()
    settings = job_settings(client, job_id)
    status = read_status(client, job_id)
    url = settings.callback_url if settings is not None else None
    if not url or status is None:
        return
    secret = callbacks.callback_secret()
    if secret is None:
        log.error("callback_not_sent", job_id=job_id, reason=f"{callbacks.SECRET_ENV} is not set")
        return
    body = status.model_dump_json().encode()
    policy = callbacks.policy_of(runtime.config.settings)
    try:
        runtime.run(callbacks.post_callback(url, body, secret, policy))
    except callbacks.CallbackRefused as error:
        log.error("callback_refused", job_id=job_id, error=str(error))  # never retried
        return
    except callbacks.CallbackFailed as error:
        log.warning(
            "callback_failed", job_id=job_id, attempt=self.request.retries + 1, error=str(error)
        )
        if self.request.retries + 1 >= callbacks.MAX_ATTEMPTS:
            return
        raise self.retry(
            countdown=callbacks.backoff_s(self.request.retries), argsrepr=_ids_repr(self)
        ) from None
    log.info("callback_sent", job_id=job_id, state=status.state)
