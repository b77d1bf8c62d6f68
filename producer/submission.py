"""Storing a submitted job as its messages stream in.

Each block of messages is validated (``producer.validation``), encoded and
written to an expiring staging key as soon as it is read, so the producer
holds a few blocks, never the whole job again. One script then creates the
job and renames its blocks into place: a job in Redis is whole or absent.
Nothing of a refused job is stored, and a crashed producer leaves only
staging keys that expire (``keys.UPLOAD_TTL_S``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, cast

import redis
from redis.exceptions import RedisError

from producer.core import keys, scripts
from producer.core.store import encode_block, now_s
from producer.errors import SmsbulkError
from producer.job import JobExists, JobSpec, JobState
from producer.validation import JobCheck

BLOCKS_PER_WRITE = 50  # staged blocks per pipeline round trip (about 1.5 MB)
DELETE_BATCH = 1000  # keys per DEL when discarding a submission


class UploadExpired(SmsbulkError):
    """The submission took longer than its staged blocks live; nothing was stored."""


class StoredJob(NamedTuple):
    """A job just stored: its settings, and the state its commit gave it
    (``scheduled`` if its schedule time is still ahead, else ``queued``)."""

    spec: JobSpec
    state: JobState


def store_job(
    client: redis.Redis,
    check: JobCheck,
    messages: Iterable[Any],
    job_id: str,
    origin: str = "",
) -> StoredJob:
    """Check and store a job whose settings ``check`` holds (``open_job``),
    reading ``messages`` once, a block at a time; returns its settings and
    the state it was stored in.
    ``check.total`` is then the number of messages.

    Raises JobRefused or JobExists, and then nothing of it is stored.
    ``origin`` identifies the submission (the Celery task id for
    ``smsbulk.submit_job``) so that a redelivered submission is recognised.
    """
    if not check.errors and client.exists(keys.job(job_id)):
        raise JobExists(job_id)  # now, rather than after reading a million messages
    upload = uuid.uuid4().hex
    staged = 0
    try:
        with existing_objects_frozen():
            pipe = client.pipeline(transaction=False)
            for block in check.blocks(messages):
                pipe.set(
                    keys.upload_block(upload, staged), encode_block(block), ex=keys.UPLOAD_TTL_S
                )
                staged += 1
                if staged % BLOCKS_PER_WRITE == 0:
                    pipe.execute()
            pipe.execute()
        spec = check.accepted()
        state = _commit(client, spec, job_id, origin, upload, staged, check.total)
    except BaseException:
        _discard(client, upload, staged)
        raise
    return StoredJob(spec, state)


@contextlib.contextmanager
def existing_objects_frozen() -> Iterator[None]:
    """Keep the cyclic garbage collector off the objects that exist already
    (the caller's million-message list, say) while messages stream through.

    A block's objects live long enough to be promoted, so the collector runs
    full passes, each over the whole heap: 37 of them, 3 s of the 4 s that a
    million messages took. Frozen (``gc.freeze``), old objects are skipped;
    new ones, a generator's cyclic garbage included, are still collected.
    The freeze is process-wide: if anything is frozen already (by the
    application, or by a submission in another thread) it is left alone.
    """
    ours = gc.get_freeze_count() == 0
    if ours:
        gc.freeze()
    try:
        yield
    finally:
        if ours:
            gc.unfreeze()


def _commit(
    client: redis.Redis,
    spec: JobSpec,
    job_id: str,
    origin: str,
    upload: str,
    blocks: int,
    total: int,
) -> JobState:
    """Create the job and rename its staged blocks into place, in one step
    (commit_job.lua); returns the state the script gave it."""
    created_at = now_s()
    schedule_s = spec.schedule_at.timestamp() if spec.schedule_at is not None else 0.0
    settings = spec.model_dump(mode="json", exclude={"messages", "job_id"})
    committed = scripts.script("commit_job")(
        keys=[
            keys.job(job_id),
            keys.JOBS_INDEX,
            keys.SCHEDULED,
            keys.ACTIVE,
            *(keys.upload_block(upload, n) for n in range(blocks)),
            *(keys.block(job_id, n) for n in range(blocks)),
        ],
        args=[
            json.dumps(settings),
            total,
            repr(created_at),
            origin,
            job_id,
            repr(schedule_s),
            blocks,
        ],
        client=client,
    )
    if committed == 0:
        raise JobExists(job_id)
    if committed == -1:
        raise UploadExpired(
            f"job {job_id}: its messages took over {keys.UPLOAD_TTL_S} s to submit; submit again"
        )
    return cast(JobState, cast(bytes, committed).decode())


def _discard(client: redis.Redis, upload: str, blocks: int) -> None:
    """Delete a submission's staged blocks; best effort, as they expire anyway
    (and the error that brought us here matters more than ours)."""
    names = [keys.upload_block(upload, n) for n in range(blocks)]
    with contextlib.suppress(RedisError):
        for first in range(0, len(names), DELETE_BATCH):
            client.delete(*names[first : first + DELETE_BATCH])
