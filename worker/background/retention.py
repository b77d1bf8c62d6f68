"""Retention: a finished job is removed from Redis ``retention_days`` after it ended.

The scripts that end a job (the workers' commit: ``completed``; cancel:
``cancelled``) add its id to the sorted set ``finished``, scored by its
``finished_at``; a retry that reopens the job takes it out again. A thread in
every worker's main process, beside the scheduler's, removes the jobs scored
before ``now - retention`` in three steps:

1. mark: one script checks that the job has still ended, ended before the
   cutoff and (cancelled) has every recipient settled, then sets ``removing``
   on the job hash: from then on a retry finds no job. It returns ``total``
   and ``chunk_size``, from which every key of the job is named.
2. the messages, outcomes, requests and leases are UNLINKed in batches, each
   only while the mark is still there;
3. the last batch also deletes the job hash and the job's index entries.

The job hash goes last, so a removal that dies half-way is finished by the
next sweep (the job is still listed, and marked), and the id cannot be taken
by a new job before its old data is gone. Workers sweeping at once only
repeat each other's UNLINKs. Jobs that ended before ``finished`` existed are
added to it from the jobs index when a worker starts, and every few hours.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import cast

import redis

from producer.core import keys
from producer.core.scripts import script
from producer.core.store import block_count, now_s
from worker.background.periodic import Periodic
from worker.ops.logs import get_logger
from worker.ops.timing import DAY_S, retention_sweep_s
from worker.pipeline.chunking import chunk_count

log = get_logger()

SWEEP_BATCH = 20  # job ids read from `finished` at a time
KEYS_PER_CALL = 1000  # keys UNLINKed by one script call
BACKFILL_PAGE = 500  # job ids looked at by one backfill call
BACKFILL_S = 6 * 3600
# A cancelled job whose sweep never settled every recipient (its cancel task
# failed for good) is removed this much later than a settled one: by then no
# worker can still be writing to it.
UNSETTLED_GRACE_S = DAY_S

_INDEXES = (keys.FINISHED, keys.JOBS_INDEX, keys.SCHEDULED, keys.ACTIVE)


@dataclass(frozen=True, slots=True)
class Removal:
    job_id: str
    outcome: str  # 'removed', or why not: 'gone', 'open', 'later', 'unsettled', 'raced'
    keys_removed: int = 0


def job_data_keys(job_id: str, total: int, chunk_size: int) -> Iterator[str]:
    """Every key of a job but its hash: a block's messages and outcomes
    together (a reader never sees messages without their outcomes), then
    each chunk's requests and lease, then the done-chunks bitmap and the
    timeline. Chunks
    are numbered by the job's chunk size, or by block if it was cancelled
    before it was planned."""
    for block_no in range(block_count(total)):
        yield keys.block(job_id, block_no)
        yield keys.outcomes(job_id, block_no)
    chunks = max(
        chunk_count(total, chunk_size or keys.BLOCK_SIZE), chunk_count(total, keys.BLOCK_SIZE)
    )
    for chunk_no in range(chunks):
        yield keys.requests(job_id, chunk_no)
        yield keys.lease(job_id, chunk_no)
    yield keys.done(job_id)
    yield keys.timeline(job_id)


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def remove_job(
    client: redis.Redis, job_id: str, cutoff_s: float, unsettled_cutoff_s: float
) -> Removal:
    """Remove a job that ended at or before ``cutoff_s`` (a cancelled one whose
    recipients are not all settled: at or before ``unsettled_cutoff_s``)."""
    job_key = keys.job(job_id)
    reply = cast(
        list[bytes],
        script("retention_mark")(
            keys=[job_key, *_INDEXES],
            args=[job_id, repr(cutoff_s), repr(unsettled_cutoff_s)],
            client=client,
        ),
    )
    outcome = _text(reply[0])
    if outcome != "remove":
        return Removal(job_id, outcome)
    total, chunk_size = int(reply[1]), int(_text(reply[2]) or 0)
    data_keys = job_data_keys(job_id, total, chunk_size)
    removed = 0
    while True:
        batch = list(islice(data_keys, KEYS_PER_CALL))
        last = len(batch) < KEYS_PER_CALL
        n = int(
            cast(
                int,
                script("retention_remove")(
                    keys=[job_key, *_INDEXES, *batch],
                    args=[job_id, "1" if last else "0"],
                    client=client,
                ),
            )
        )
        if n < 0:
            return Removal(job_id, "raced", removed)
        removed += n
        if last:
            return Removal(job_id, "removed", removed)


def sweep(
    client: redis.Redis,
    retention_s: float,
    now: float | None = None,
    stopping: threading.Event | None = None,
) -> list[Removal]:
    """Remove every job that ended more than ``retention_s`` ago; returns the
    removals this call completed."""
    cutoff_s = (now_s() if now is None else now) - retention_s
    unsettled_cutoff_s = cutoff_s - UNSETTLED_GRACE_S
    done: list[Removal] = []
    skipped = 0  # listed jobs that stay listed (unsettled): read past them
    while stopping is None or not stopping.is_set():
        ids = cast(
            list[bytes],
            client.zrangebyscore(keys.FINISHED, "-inf", cutoff_s, start=skipped, num=SWEEP_BATCH),
        )
        for raw in ids:
            removal = remove_job(client, raw.decode(), cutoff_s, unsettled_cutoff_s)
            if removal.outcome == "removed":
                done.append(removal)
                log.info("job_removed", job_id=removal.job_id, keys=removal.keys_removed)
            elif removal.outcome == "unsettled":
                skipped += 1
        if len(ids) < SWEEP_BATCH:
            break
    return done


def backfill(client: redis.Redis) -> int:
    """List the ended jobs that ``finished`` lacks (they ended before it
    existed, or on a worker of an older version; returns how many), and the
    queued and running jobs that ``active`` lacks, likewise."""
    added, cursor = 0, 0
    while True:
        cursor, page = cast(
            tuple[int, list[tuple[bytes, float]]],
            client.zscan(keys.JOBS_INDEX, cursor, count=BACKFILL_PAGE),
        )
        ids = [member.decode() for member, _ in page]
        if ids:
            job_keys = [keys.job(job_id) for job_id in ids]
            added += int(
                cast(
                    int,
                    script("retention_backfill")(
                        keys=[keys.FINISHED, keys.ACTIVE, *job_keys],
                        args=[repr(now_s()), *ids],
                        client=client,
                    ),
                )
            )
        if cursor == 0:
            return added


class Sweeper(Periodic):
    """Removes jobs past retention until stopped."""

    failure_event = "retention_sweep_failed"

    def __init__(
        self, client: redis.Redis, retention_s: float, interval_s: float | None = None
    ) -> None:
        interval_s = retention_sweep_s(retention_s) if interval_s is None else interval_s
        super().__init__("smsbulk-retention", interval_s)
        self.client = client
        self.retention_s = retention_s
        self.backfill_due = 0.0  # monotonic time of the next backfill: the first step's

    def step(self) -> None:
        if time.monotonic() >= self.backfill_due:
            added = backfill(self.client)
            self.backfill_due = time.monotonic() + BACKFILL_S
            if added:
                log.info("finished_jobs_listed", jobs=added)
        sweep(self.client, self.retention_s, stopping=self.stopping)
