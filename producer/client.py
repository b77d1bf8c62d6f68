"""The enqueue client other applications use: ``from producer import Producer``."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, cast

import redis
from celery import Celery

from producer import control, monitoring
from producer.accounts import AccountInfo, KindInfo, load_accounts
from producer.control import JobStateConflict
from producer.core import keys
from producer.core.connection import celery_settings, riding_out, sync_client
from producer.core.settings import job_settings
from producer.core.states import ENDED_STATES
from producer.core.store import iter_outcomes, read_status
from producer.destinations import load_policy
from producer.errors import SmsbulkError
from producer.job import Job, JobStatus, Outcome
from producer.submission import store_job
from producer.validation import open_job

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# stdlib logging, not structlog: an application that imports the producer and
# configures nothing gets warnings on stderr (structlog's default would print
# on its stdout); worker.ops.logs routes this logger through its processors.
log = logging.getLogger("smsbulk.producer")


class NoSuchJob(SmsbulkError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no such job: {job_id}")
        self.job_id = job_id


REDIS_RETRIES = 30


def redis_url_from_env() -> str:
    return os.environ.get("SMSBULK_REDIS_URL", DEFAULT_REDIS_URL)


def connect(redis_url: str) -> redis.Redis:
    """A Redis client that rides out a server restart or a failover (about
    30 s of retries), for any URL form (producer/core/connection.py)."""
    return sync_client(redis_url, **riding_out(REDIS_RETRIES))


def queue_for(priority: str) -> str:
    return keys.HIGH_QUEUE if priority == "high" else keys.NORMAL_QUEUE


def enqueue_plan(celery: Celery, job_id: str, priority: str) -> None:
    celery.send_task(
        keys.PLAN_JOB, args=[job_id], queue=queue_for(priority), argsrepr=f"job_id={job_id}"
    )


def enqueue_cancel(celery: Celery, job_id: str, priority: str, countdown_s: float = 0) -> None:
    """The cancelled job's sweep (worker/pipeline/cancelling.py)."""
    celery.send_task(
        keys.CANCEL_JOB,
        args=[job_id],
        queue=queue_for(priority),
        countdown=countdown_s or None,
        argsrepr=f"job_id={job_id}",
    )


def enqueue_chunk(
    celery: Celery, job_id: str, chunk_no: int, queue: str, countdown_s: float = 0, parts: int = 0
) -> None:
    """A send_chunk task. ``parts`` > 0: the chunk was deferred for
    rate-limit capacity, for a first request of that many parts (see
    ``send_chunk``)."""
    args: list[str | int] = [job_id, chunk_no]
    shown = f"job_id={job_id}, chunk={chunk_no}"
    if parts:
        args.append(parts)
        shown += f", parts={parts}"
    celery.send_task(
        keys.SEND_CHUNK, args=args, queue=queue, countdown=countdown_s or None, argsrepr=shown
    )


def enqueue_plan_if_due(
    client: redis.Redis, celery: Celery, job_id: str, priority: str, state: str | None = None
) -> None:
    """Plan now, unless the job waits for its schedule (workers release it).
    ``state``: the job's state if the caller knows it (``store_job`` says
    which it gave), else read from Redis."""
    if state is None:
        raw = client.hget(keys.job(job_id), "state")
        state = raw.decode() if isinstance(raw, bytes) else None
    if state != "scheduled":
        enqueue_plan(celery, job_id, priority)


def publish_plan(
    client: redis.Redis, celery: Celery, job_id: str, priority: str, state: str | None = None
) -> bool:
    """``enqueue_plan_if_due`` for a job just stored: False, and a warning, if
    the publish failed. Raising then would tell the caller the job failed
    and invite a second submission (every recipient sent twice); the job is
    stored and listed in smsbulk:active, so the workers' watchdog plans it
    once it has been silent for the visibility timeout (a scheduled job is
    released by the workers anyway)."""
    try:
        enqueue_plan_if_due(client, celery, job_id, priority, state)
    except Exception as error:  # whatever it was: the job exists, and is watched
        log.warning(
            "job %s is stored but its plan task was not published (%s: %s); "
            "the workers' watchdog will plan it within recovery_s",
            job_id,
            type(error).__name__,
            error,
        )
        return False
    return True


def broker_app(redis_url: str) -> Celery:
    """A Celery app used only to publish: the producer never imports worker/."""
    urls = celery_settings(redis_url)
    app = Celery("smsbulk-producer", broker=urls.pop("broker_url"), set_as_current=False)
    urls.pop("result_backend")
    # task-sent events: without them Flower shows a task only once a worker takes it.
    app.conf.update(
        task_serializer="json", accept_content=["json"], task_send_sent_event=True, **urls
    )
    return app


class Producer:
    """Submit jobs and read their status and results."""

    def __init__(
        self,
        redis_url: str | None = None,
        config_path: str | None = None,
        kinds: Mapping[str, KindInfo] | None = None,
    ) -> None:
        """``kinds``: the facts of each provider kind, when the caller knows
        them (the ``smsbulk`` command does); else those the workers publish."""
        self.redis_url = redis_url or redis_url_from_env()
        self.redis = connect(self.redis_url)
        self._config_path = config_path
        self._kinds = kinds
        self._celery: Celery | None = None
        self._errors = monitoring.ErrorCounts()

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = broker_app(self.redis_url)
        return self._celery

    def accounts(self) -> dict[str, AccountInfo]:
        return load_accounts(self.redis, self._config_path, self._kinds)

    def account_health(self) -> list[dict[str, Any]]:
        """Each account's kind and its live figures as the workers see them
        now (``producer.monitoring.account_health`` says which)."""
        accounts = self.accounts()
        health = monitoring.account_health(self.redis, accounts)
        return [{"kind": accounts[line["account"]].kind, **line} for line in health]

    def timeline(self, job_id: str) -> list[dict[str, Any]]:
        """The job's recipients accepted per second (``monitoring.job_timeline``)."""
        points = monitoring.job_timeline(self.redis, job_id)
        if points is None:
            raise NoSuchJob(job_id)
        return points

    def errors(self, job_id: str) -> list[dict[str, Any]]:
        """The job's errors grouped by code (``monitoring.job_errors``), counted
        again only once they may have changed (``monitoring.ErrorCounts``)."""
        groups = self._errors.get(self.redis, job_id)
        if groups is None:
            raise NoSuchJob(job_id)
        return groups

    def submit(self, job: Job | dict[str, Any] | str | bytes) -> str:
        """Validate, store and enqueue a job; returns its id.

        ``job`` is a Job, a dict, or its JSON (str or bytes). A dict's
        ``"messages"`` may be any iterable of message dicts (or Messages), a
        generator included: messages are validated and stored a block of
        1000 at a time, so the caller's list, if any, is the only full copy
        of the job (a generator needs none).

        Raises JobRefused or JobExists, and then nothing of the job is stored.
        Once the job is stored, its id is returned even if publishing its plan
        task fails (logged as a warning): the workers' watchdog plans it.
        """
        check, messages = open_job(job, self.accounts(), load_policy(self._config_path))
        job_id = check.job_id or uuid.uuid4().hex
        stored = store_job(self.redis, check, messages, job_id)
        publish_plan(self.redis, self.celery, job_id, stored.spec.priority, stored.state)
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
        settings = job_settings(self.redis, job_id)
        if settings is None:
            raise NoSuchJob(job_id)
        return settings.priority

    def _controlled(self, job_id: str, outcome: tuple[str, bool] | None, verb: str) -> str:
        if outcome is None:
            raise NoSuchJob(job_id)
        state, changed = outcome
        if not changed and state in ENDED_STATES:
            raise JobStateConflict(f"job is {state}: nothing to {verb}")
        return state

    def cancel(self, job_id: str) -> JobStatus:
        """Recipients not yet sent become ``cancelled``; requests in flight
        finish and are recorded; no request starts after this returns.

        The sweep that settles them is a task; should it never run (this
        process dies before publishing it, or the broker loses it), the
        workers' watchdog publishes it again for the cancelled job."""
        outcome = control.cancel(self.redis, job_id)
        self._controlled(job_id, outcome, "cancel")
        if outcome is not None and outcome[1]:
            enqueue_cancel(self.celery, job_id, self._priority(job_id))
        return self.status(job_id)

    def pause(self, job_id: str) -> JobStatus:
        """No request of the job starts after this returns, until ``resume``."""
        self._controlled(job_id, control.pause(self.redis, job_id), "pause")
        return self.status(job_id)

    def resume(self, job_id: str, max_cost: str | None = None) -> JobStatus:
        """Resume a paused job. ``max_cost``: a new spend cap for a job
        submitted with one (without it the cap stays), set even if the job
        is not paused; refused (InvalidResume, naming ``max_cost``) below
        what the job has spent already."""
        settings = job_settings(self.redis, job_id)
        if settings is None:
            raise NoSuchJob(job_id)
        if max_cost is not None:
            try:
                ended = control.set_max_cost(self.redis, job_id, max_cost, settings.max_cost)
            except KeyError:
                raise NoSuchJob(job_id) from None
            if ended is not None:
                raise JobStateConflict(f"job is {ended}: nothing to resume")
        schedule_s = settings.schedule_s or 0.0
        outcome = control.resume(self.redis, job_id, schedule_s)
        state = self._controlled(job_id, outcome, "resume")
        if outcome is not None and outcome[1] and state == "queued":
            enqueue_plan(self.celery, job_id, settings.priority)
        return self.status(job_id)

    def retry(self, job_id: str, statuses: list[str] | None = None) -> JobStatus:
        """Send the recipients with these final statuses again (default:
        failed and unknown), as new attempts, once the job has ended.

        The reopened job records the reset it owes, so that a caller dying
        half way leaves a queued job that the workers finish (the watchdog
        plans it; the plan completes the reset): retry is never half done."""
        statuses = list(statuses or ["failed", "unknown"])
        control.check_retry_statuses(statuses)
        outcome = control.reopen_for_retry(self.redis, job_id, statuses)
        if outcome is None:
            raise NoSuchJob(job_id)
        state, changed = outcome
        if not changed and state in ENDED_STATES:
            return self.status(job_id)  # no recipient with those statuses: nothing to send
        if not changed:
            raise JobStateConflict(
                f"job is {state}: retry once it has ended (wait for it, or cancel it first)"
            )
        control.continue_retry(self.redis, job_id)
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
