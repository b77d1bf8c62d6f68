"""The enqueue client other applications use: ``from producer import Producer``."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from itertools import islice
from typing import Any, cast

import redis
from celery import Celery
from pydantic import ValidationError
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from producer import control, keys
from producer.accounts import AccountInfo, load_accounts
from producer.control import JobStateConflict
from producer.job import Job, JobRefused, JobStatus, Outcome, refusal_from
from producer.store import encode_block, iter_outcomes, job_spec, now_s, read_status

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# Creates the job hash only if no job has that id; returns 1 if created.
_CREATE_JOB = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'state', ARGV[2], 'total', ARGV[3],
           'created_at', ARGV[4], 'origin', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[6])
if ARGV[2] == 'scheduled' then redis.call('ZADD', KEYS[3], ARGV[7], ARGV[6]) end
return 1
"""


class JobExists(Exception):
    """A job with this id exists already."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job exists: {job_id}")
        self.job_id = job_id


class NoSuchJob(Exception):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no such job: {job_id}")
        self.job_id = job_id


REDIS_RETRIES = 30


def redis_url_from_env() -> str:
    return os.environ.get("SMSBULK_REDIS_URL", DEFAULT_REDIS_URL)


def connect(redis_url: str) -> redis.Redis:
    """A Redis client that rides out a server restart (about 30 s of retries)."""
    return redis.Redis.from_url(
        redis_url,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), REDIS_RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


def validate_job(job: Job | dict[str, Any] | str | bytes, accounts: dict[str, AccountInfo]) -> Job:
    """Everything that refuses a job whole (INTERFACE.md); raises JobRefused."""
    try:
        if isinstance(job, Job):
            parsed = job
        elif isinstance(job, str | bytes):
            parsed = Job.model_validate_json(job)
        else:
            parsed = Job.model_validate(job)
    except ValidationError as error:
        raise refusal_from(error) from None
    account = accounts.get(parsed.provider)
    if account is None:
        known = ", ".join(sorted(accounts)) or "none"
        raise JobRefused(
            [
                {
                    "field": "provider",
                    "msg": f"unknown provider (accounts: {known})",
                    "type": "unknown",
                }
            ]
        )
    errors: list[dict[str, Any]] = []
    if account.is_template:
        if not parsed.template_id:
            errors.append(_error("template_id", f"required for {account.kind} account"))
    elif parsed.text is None:
        errors.extend(
            _error(f"messages[{i}].text", "no text: give the message a text or the job a default")
            for i, message in enumerate(parsed.messages)
            if message.text is None
        )
    if account.needs_sender and not (parsed.sender or account.sender):
        errors.append(_error("sender", f"required for {account.kind} (in the job or the account)"))
    if errors:
        raise JobRefused(errors[:20])
    return parsed


def _error(field: str, msg: str) -> dict[str, Any]:
    return {"field": field, "msg": msg, "type": "value_error"}


def store_job(client: redis.Redis, job: Job, job_id: str, origin: str = "") -> bool:
    """Write a validated job; False if the id exists (then nothing is written).

    ``origin`` identifies the submission (the Celery task id for
    ``smsbulk.submit_job``) so that a redelivered submission is recognised.
    """
    spec = job.model_dump(mode="json", exclude={"messages", "job_id"})
    created_at = now_s()
    schedule_s = job.schedule_at.timestamp() if job.schedule_at is not None else 0.0
    # schedule_at in the past means now.
    state = "scheduled" if schedule_s > created_at else "queued"
    created = client.eval(
        _CREATE_JOB,
        3,
        keys.job(job_id),
        keys.JOBS_INDEX,
        keys.SCHEDULED,
        json.dumps(spec),
        state,
        len(job.messages),
        repr(created_at),
        origin,
        job_id,
        repr(schedule_s),
    )
    if not created:
        return False
    write_blocks(client, job, job_id)
    return True


def write_blocks(client: redis.Redis, job: Job, job_id: str) -> None:
    pipe = client.pipeline(transaction=False)
    messages = iter(job.messages)
    block_no = 0
    while block := list(islice(messages, keys.BLOCK_SIZE)):
        pipe.set(keys.block(job_id, block_no), encode_block(block))
        block_no += 1
        if block_no % 50 == 0:
            pipe.execute()
    pipe.execute()


def queue_for(priority: str) -> str:
    return keys.HIGH_QUEUE if priority == "high" else keys.NORMAL_QUEUE


def enqueue_plan(celery: Celery, job_id: str, priority: str) -> None:
    celery.send_task(
        keys.PLAN_JOB, args=[job_id], queue=queue_for(priority), argsrepr=f"job_id={job_id}"
    )


def enqueue_plan_if_due(client: redis.Redis, celery: Celery, job_id: str, priority: str) -> None:
    """Plan now, unless the job waits for its schedule (workers release it)."""
    if client.hget(keys.job(job_id), "state") != b"scheduled":
        enqueue_plan(celery, job_id, priority)


def broker_app(redis_url: str) -> Celery:
    """A Celery app used only to publish: the producer never imports worker/."""
    app = Celery("smsbulk-producer", broker=redis_url, set_as_current=False)
    # task-sent events: Flower shows a task from its enqueueing on (FIELD-NOTES).
    app.conf.update(task_serializer="json", accept_content=["json"], task_send_sent_event=True)
    return app


class Producer:
    """Submit jobs and read their status and results."""

    def __init__(self, redis_url: str | None = None, config_path: str | None = None) -> None:
        self.redis_url = redis_url or redis_url_from_env()
        self.redis = connect(self.redis_url)
        self._config_path = config_path
        self._celery: Celery | None = None

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = broker_app(self.redis_url)
        return self._celery

    def accounts(self) -> dict[str, AccountInfo]:
        return load_accounts(self.redis, self._config_path)

    def submit(self, job: Job | dict[str, Any] | str | bytes) -> str:
        """Validate, store and enqueue a job; returns its id.

        Raises JobRefused (nothing stored) or JobExists.
        """
        parsed = validate_job(job, self.accounts())
        job_id = parsed.job_id or uuid.uuid4().hex
        if not store_job(self.redis, parsed, job_id):
            raise JobExists(job_id)
        enqueue_plan_if_due(self.redis, self.celery, job_id, parsed.priority)
        return job_id

    def status(self, job_id: str) -> JobStatus:
        status = read_status(self.redis, job_id)
        if status is None:
            raise NoSuchJob(job_id)
        return status

    def results(self, job_id: str, ref: str | None = None) -> Iterator[Outcome]:
        self.status(job_id)
        return iter_outcomes(self.redis, job_id, ref=ref)

    def _priority(self, job_id: str) -> str:
        spec = job_spec(self.redis, job_id)
        if spec is None:
            raise NoSuchJob(job_id)
        return str(spec.get("priority", "normal"))

    def _controlled(self, job_id: str, outcome: tuple[str, bool] | None, verb: str) -> str:
        if outcome is None:
            raise NoSuchJob(job_id)
        state, changed = outcome
        if not changed and state in control.FINAL_STATES:
            raise JobStateConflict(f"job is {state}: nothing to {verb}")
        return state

    def cancel(self, job_id: str) -> JobStatus:
        """Recipients not yet sent become ``cancelled``; requests in flight
        finish and are recorded; no request starts after this returns."""
        state = self._controlled(job_id, control.cancel(self.redis, job_id), "cancel")
        if state == "cancelled":
            self.celery.send_task(
                keys.CANCEL_JOB,
                args=[job_id],
                queue=queue_for(self._priority(job_id)),
                argsrepr=f"job_id={job_id}",
            )
        return self.status(job_id)

    def pause(self, job_id: str) -> JobStatus:
        """No request of the job starts after this returns, until ``resume``."""
        self._controlled(job_id, control.pause(self.redis, job_id), "pause")
        return self.status(job_id)

    def resume(self, job_id: str) -> JobStatus:
        spec = job_spec(self.redis, job_id)
        if spec is None:
            raise NoSuchJob(job_id)
        schedule_at = spec.get("schedule_at")
        schedule_s = datetime.fromisoformat(schedule_at).timestamp() if schedule_at else 0.0
        outcome = control.resume(self.redis, job_id, schedule_s)
        state = self._controlled(job_id, outcome, "resume")
        if outcome is not None and outcome[1] and state == "queued":
            enqueue_plan(self.celery, job_id, str(spec.get("priority", "normal")))
        return self.status(job_id)

    def retry(self, job_id: str, statuses: list[str] | None = None) -> JobStatus:
        """Send the recipients with these final statuses again (default:
        failed and unknown), as new attempts, once the job has ended."""
        statuses = list(statuses or ["failed", "unknown"])
        control.check_retry_statuses(statuses)
        outcome = control.reopen_for_retry(self.redis, job_id, statuses)
        if outcome is None:
            raise NoSuchJob(job_id)
        state, changed = outcome
        if not changed and state in control.FINAL_STATES:
            return self.status(job_id)  # no recipient with those statuses: nothing to send
        if not changed:
            raise JobStateConflict(
                f"job is {state}: retry once it has ended (wait for it, or cancel it first)"
            )
        status = self.status(job_id)
        control.reset_outcomes(self.redis, job_id, status.total, statuses)
        enqueue_plan(self.celery, job_id, self._priority(job_id))
        return self.status(job_id)

    def jobs(self, limit: int = 20) -> list[JobStatus]:
        ids = cast(list[bytes], self.redis.zrevrange(keys.JOBS_INDEX, 0, max(limit, 1) - 1))
        statuses = (read_status(self.redis, raw.decode()) for raw in ids)
        return [status for status in statuses if status is not None]

    def close(self) -> None:
        self.redis.close()
        if self._celery is not None:
            self._celery.close()
