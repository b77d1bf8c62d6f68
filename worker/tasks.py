"""Celery tasks: submit -> plan -> send chunk (-> send chunk again on retry).

Every task takes ids, never recipients, texts or credentials, and shows
only ids in Flower (``argsrepr``). Every task is idempotent: Redis can
deliver a task twice, and a killed worker's task is delivered again.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, cast

import redis
from celery import Task

from producer import keys
from producer.accounts import load_accounts
from producer.client import enqueue_plan, redis_url_from_env, store_job, validate_job, write_blocks
from producer.job import JobRefused
from producer.store import now_s
from worker.celery_app import LEASE_TTL_S, MAX_COUNTDOWN_S, app
from worker.chunking import chunk_count
from worker.logs import get_logger
from worker.results_store import new_token
from worker.runtime import get_runtime
from worker.sending import ChunkSender, fail_chunk

log = get_logger()
UNKNOWN_ACCOUNT_RETRIES = 10
UNKNOWN_ACCOUNT_RETRY_S = 30
_redis: redis.Redis | None = None


def sync_redis() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(redis_url_from_env())
    return _redis


def queue_for(priority: str) -> str:
    return keys.HIGH_QUEUE if priority == "high" else keys.NORMAL_QUEUE


@app.task(name=keys.SUBMIT_JOB, bind=True, ignore_result=False)
def submit_job(self: Task, job: dict[str, Any]) -> dict[str, Any]:
    """Accept a job from any Celery client. Without a ``job_id`` the task id
    is the job id, so a redelivered submission finds its own job instead of
    making a second one."""
    client = sync_redis()
    task_id = str(self.request.id)
    try:
        parsed = validate_job(job, load_accounts(client))
    except JobRefused as refused:
        log.warning("job_refused", errors=refused.errors)
        return {"error": "invalid job", "errors": refused.errors}
    job_id = parsed.job_id or task_id
    if not store_job(client, parsed, job_id, origin=task_id):
        if client.hget(keys.job(job_id), "origin") != task_id.encode():
            log.warning("job_refused_exists", job_id=job_id)
            return {"error": "job exists", "job_id": job_id}
        # Our own submission, delivered again: finish what it may have left undone.
        write_blocks(client, parsed, job_id)
    enqueue_plan(app, job_id, parsed.priority)
    log.info("job_submitted", job_id=job_id, total=len(parsed.messages))
    return {"job_id": job_id}


@app.task(name=keys.PLAN_JOB, bind=True)
def plan_job(self: Task, job_id: str) -> None:
    """Split the job into chunks (index ranges) and enqueue one send task each."""
    client = sync_redis()
    fields = cast(
        list[bytes], client.hmget(keys.job(job_id), ["spec", "state", "total", "chunk_size"])
    )
    if fields[0] is None:
        log.warning("plan_unknown_job", job_id=job_id)
        return
    spec, state, total = json.loads(fields[0]), fields[1].decode(), int(fields[2])
    if state not in ("queued", "scheduled"):
        return  # planned already (a redelivery), or paused/cancelled
    priority = spec.get("priority", "normal")
    if spec.get("schedule_at"):
        wait_s = datetime.fromisoformat(spec["schedule_at"]).timestamp() - now_s()
        if wait_s > 0:
            # Short hops, never one long ETA (FIELD-NOTES: countdowns longer
            # than the visibility timeout run several times).
            self.apply_async(
                args=[job_id],
                countdown=min(wait_s, MAX_COUNTDOWN_S),
                queue=queue_for(priority),
                argsrepr=f"job_id={job_id}",
            )
            return
    account = get_runtime().config.accounts.get(spec["provider"])
    if account is None:
        _retry_unknown_account(self, job_id, spec["provider"])
    chunk_size = int(fields[3] or 0) or (account.batch_size if account else keys.BLOCK_SIZE)
    client.hsetnx(keys.job(job_id), "chunk_size", chunk_size)
    chunk_size = int(client.hget(keys.job(job_id), "chunk_size") or chunk_size)
    n_chunks = chunk_count(total, chunk_size)
    queue = queue_for(priority)
    for chunk_no in range(n_chunks):
        app.send_task(
            keys.SEND_CHUNK,
            args=[job_id, chunk_no],
            queue=queue,
            argsrepr=f"job_id={job_id}, chunk={chunk_no}",
        )
    client.eval(
        "if redis.call('HGET', KEYS[1], 'state') == ARGV[1] then "
        "redis.call('HSET', KEYS[1], 'state', 'running') end",
        1,
        keys.job(job_id),
        state,
    )
    log.info("job_planned", job_id=job_id, chunks=n_chunks, chunk_size=chunk_size)


def _retry_unknown_account(task: Task, job_id: str, account: str) -> None:
    """A worker whose configuration lacks the job's account (a rolling
    deploy, say) hands the task back for a while, then gives up: the chunk's
    recipients are then failed, never left pending forever."""
    log.error("account_not_configured", job_id=job_id, account=account)
    if task.request.retries < UNKNOWN_ACCOUNT_RETRIES:
        raise task.retry(countdown=UNKNOWN_ACCOUNT_RETRY_S, max_retries=UNKNOWN_ACCOUNT_RETRIES)


@app.task(name=keys.SEND_CHUNK, bind=True)
def send_chunk(self: Task, job_id: str, chunk_no: int) -> None:
    runtime = get_runtime()
    job = runtime.run(runtime.store.job(job_id))
    if job is not None and job.spec["provider"] not in runtime.config.accounts:
        _retry_unknown_account(self, job_id, job.spec["provider"])
        reason = f"account {job.spec['provider']} is not configured on the workers"
        runtime.run(fail_chunk(runtime.store, job, chunk_no, reason))
        return
    retry_in_s = runtime.run(_send_chunk(job_id, chunk_no))
    if retry_in_s is not None:
        queue = (self.request.delivery_info or {}).get("routing_key") or keys.NORMAL_QUEUE
        self.apply_async(
            args=[job_id, chunk_no],
            countdown=retry_in_s,
            queue=queue,
            argsrepr=f"job_id={job_id}, chunk={chunk_no}",
        )


async def _send_chunk(job_id: str, chunk_no: int) -> float | None:
    runtime = get_runtime()
    store = runtime.store
    job = await store.job(job_id)
    if job is None or job.state not in ("running", "queued"):
        return None
    account = runtime.config.accounts[job.spec["provider"]]
    token = new_token()
    if not await store.acquire_lease(job_id, chunk_no, token, LEASE_TTL_S):
        log.info("chunk_busy", job_id=job_id, chunk=chunk_no)
        return None  # another worker holds it: a duplicate delivery
    try:
        sender = ChunkSender(store, runtime.adapter(account), job, chunk_no, MAX_COUNTDOWN_S)
        result = await sender.run(runtime.session)
        return result.retry_in_s
    finally:
        await store.release_lease(job_id, chunk_no, token)
