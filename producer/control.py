"""Job control: cancel, pause, resume, retry — state transitions in Redis.

Each transition is one Lua script, so two callers never both win. Workers
honour the state: a provider request starts only while its job is
``running`` or ``queued`` (checked in the same script that marks the request
``sending``), so after ``pause`` or ``cancel`` returns no new request starts;
requests already in flight finish and are recorded.

A transition that takes more than one step never leaves a job half way:
``retry`` reopens the job and records on it the reset it owes, which its
caller, or else the plan task (worker/tasks.py), finishes; ``cancel`` keeps
the job watched until its sweep has settled every recipient
(worker/background/watchdog.py publishes the sweep again if it never ran).
"""

from __future__ import annotations

import json
import time
from typing import cast

import redis

from producer.core import keys, scripts
from producer.core.money import decimal_string, micros
from producer.core.store import STATUS_CODES, block_count, now_s
from producer.errors import SmsbulkError
from producer.job import parse_max_cost

RETRYABLE_STATUSES = ("failed", "unknown", "expired", "cancelled")

# Every transition (producer/core/lua/*_job.lua) is given the same first
# keys: job hash, scheduled set, finished set (an ended job, scored by
# finished_at, which the workers remove after retention_days), active set (a
# queued or running job, or a cancelled one not settled yet, scored by its
# last activity, which the workers' watchdog reconciles). It returns the
# job's state, "!" appended when this call changed it.


class JobStateConflict(SmsbulkError):
    """The job's state does not allow what was asked (HTTP 409, exit 1)."""


class InvalidRetry(SmsbulkError, ValueError):
    """Statuses that retry does not take (HTTP 422, exit 2)."""


class InvalidResume(SmsbulkError, ValueError):
    """A ``max_cost`` that resume does not take (HTTP 422, exit 2); the
    message names the field."""

    def __init__(self, msg: str) -> None:
        super().__init__(f"max_cost: {msg}")
        self.errors = [{"field": "max_cost", "msg": msg, "type": "value_error"}]


def _transition(
    client: redis.Redis, name: str, job_id: str, *args: str, more_keys: tuple[str, ...] = ()
) -> tuple[str, bool] | None:
    job_keys = [keys.job(job_id), keys.SCHEDULED, keys.FINISHED, keys.ACTIVE, *more_keys]
    raw = scripts.script(name)(keys=job_keys, args=list(args), client=client)
    if raw is None:
        return None
    state = raw.decode() if isinstance(raw, bytes) else str(raw)
    return state.rstrip("!"), state.endswith("!")


def cancel(client: redis.Redis, job_id: str) -> tuple[str, bool] | None:
    return _transition(
        client, "cancel_job", job_id, repr(now_s()), job_id, more_keys=(keys.done(job_id),)
    )


def pause(client: redis.Redis, job_id: str) -> tuple[str, bool] | None:
    return _transition(client, "pause_job", job_id)


def resume(client: redis.Redis, job_id: str, schedule_s: float) -> tuple[str, bool] | None:
    return _transition(client, "resume_job", job_id, repr(schedule_s), job_id, repr(now_s()))


def set_max_cost(
    client: redis.Redis, job_id: str, max_cost: str, submitted: str | None
) -> str | None:
    """Give a job a new spend cap (set_max_cost.lua) before it is resumed;
    ``submitted``: the job's own ``max_cost`` (None: it has none). Returns
    None once set, else the state of a job that has ended (unchanged);
    raises InvalidResume for a malformed cap, a job without a cap, or a cap
    below what its requests have reserved already. Raises KeyError if
    there is no such job."""
    try:
        units = micros(parse_max_cost(max_cost), round_up=False)
    except ValueError as error:
        raise InvalidResume(str(error)) from None
    if submitted is None:
        raise InvalidResume(
            "the job was submitted without a spend cap; one cannot be added on resume"
        )
    raw = scripts.script("set_max_cost")(keys=[keys.job(job_id)], args=[units], client=client)
    if raw is None:
        raise KeyError(job_id)
    answer, spent = (part.decode() if isinstance(part, bytes) else str(part) for part in raw)
    if answer == "low":
        raise InvalidResume(
            f"{max_cost} is below what the job has spent already ({decimal_string(int(spent))})"
        )
    return None if answer == "set" else answer


def reopen_for_retry(
    client: redis.Redis, job_id: str, statuses: list[str]
) -> tuple[str, bool] | None:
    """Back to ``queued`` if the job has ended and has recipients to retry;
    unchanged (an ended state) if it has none."""
    wanted = json.dumps([STATUS_CODES[s] for s in statuses])
    return _transition(client, "reopen_job", job_id, wanted, job_id, repr(now_s()))


def check_retry_statuses(statuses: list[str]) -> None:
    unknown = [s for s in statuses if s not in RETRYABLE_STATUSES]
    if unknown or not statuses:
        raise InvalidRetry(
            f"statuses: {', '.join(unknown) or 'none given'}; "
            f"retry takes {', '.join(RETRYABLE_STATUSES)}"
        )


def restart_run(client: redis.Redis, job_id: str) -> int:
    """Start the retried job's new run once every block's outcomes are reset
    (restart_run.lua); returns the job's run."""
    total = int(cast(bytes, client.hget(keys.job(job_id), "total") or b"0"))
    raw = scripts.script("restart_run")(
        keys=[keys.job(job_id), keys.done(job_id)], args=[block_count(total)], client=client
    )
    return int(cast(int, raw))


def reset_outcomes(client: redis.Redis, job_id: str, budget_s: float | None = None) -> bool:
    """Set the reopened job's outcomes with the retried statuses back to
    pending, from the first block not reset yet; True once none is owed,
    False if ``budget_s`` ran out first. Any number of callers may run it,
    at once or one after another: each block is reset once."""
    retry, raw_next, raw_total = cast(
        list[bytes | None], client.hmget(keys.job(job_id), ["retry", "retry_next", "total"])
    )
    if retry is None:
        return True
    started = time.monotonic()
    script = scripts.script("reset_outcomes")
    n_blocks = block_count(int(raw_total or 0))
    for block_no in range(int(raw_next or 0), n_blocks):
        block = keys.outcomes(job_id, block_no)
        script(keys=[keys.job(job_id), block], args=[block_no, repr(now_s())], client=client)
        out_of_time = budget_s is not None and time.monotonic() - started > budget_s
        if out_of_time and block_no + 1 < n_blocks:
            return False  # one block at least each time: every call gets on
    return True


def continue_retry(client: redis.Redis, job_id: str, budget_s: float | None = None) -> bool:
    """Finish a reopened job's reset and start its new run (nothing, if no
    reset is owed); False if ``budget_s`` ran out first (call it again)."""
    if not reset_outcomes(client, job_id, budget_s):
        return False
    restart_run(client, job_id)
    return True
