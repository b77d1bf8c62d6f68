"""The watchdog: re-enqueues chunk and plan tasks that the broker lost.

kombu's Redis transport pops a message with BRPOP and only then records it
in its ``unacked`` hash; a worker main process killed in between loses that
message for good (celery #7950, kombu #305, #1836). Every other delivered
message of a killed worker comes back from ``unacked`` after the visibility
timeout. So a job that has been silent that long and still misses a chunk
has lost a message, and our own store says which:

- ``smsbulk:active`` lists each queued or running job, scored by its last
  activity (submission, plan, every commit); completion and cancel unlist it.
- ``smsbulk:job:{id}:done`` has bit ``chunk`` set once the chunk's last pass
  ended with nothing left to send.
- A cancelled job stays listed until its sweep has settled every recipient
  (worker/cancelling.py): silent and unsettled, its ``cancel_job`` task is
  published again (lost by the broker, never published by a producer that
  died, or given up); settled, it is unlisted. A running job whose every
  chunk is done gets a plan task, which completes it.

Every worker's main process looks every ``RESTORE_SWEEP_S`` for jobs silent
for ``stall_s`` (the visibility timeout), claims each one (a compare-and-set
on its score, so one worker looks at a job once per ``stall_s``) and, by its
state: a queued job without a plan task anywhere gets one; a running job's
chunks that are neither done, leased, nor referenced by a task waiting on a
queue or held unacknowledged get one task each. The queues and ``unacked``
are read in one script, an atomic snapshot that costs O(backlog): it is
taken only for silent jobs with chunks left, once per sweep.

A message inside a live worker's BRPOP window at the snapshot is missed by
it, and its chunk gets a second task: harmless, like any redelivery (the
chunk's lease, its request states and the fenced commit; a pass over a done
chunk returns at once).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

import redis

from producer import keys
from producer.client import queue_for
from producer.store import now_s
from worker.chunking import chunk_count
from worker.logs import get_logger
from worker.periodic import Periodic
from worker.results_store import finish_if_final
from worker.timing import RESTORE_SWEEP_S

log = get_logger()

CLAIM_BATCH = 20  # silent jobs claimed at a time

# kombu's Redis transport (kombu/transport/redis.py): a queue's messages sit
# in one list per priority step (`queue`, then `queue\x06\x16{3,6,9}`), and
# a delivered, unacknowledged message in the hash `unacked` as
# `[message, exchange, routing key]`.
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)
KOMBU_PRIORITY_SEP = "\x06\x16"
KOMBU_UNACKED = "unacked"


def queue_lists(queues: Iterable[str] = keys.WORKER_QUEUES) -> list[str]:
    return [
        queue if step == 0 else f"{queue}{KOMBU_PRIORITY_SEP}{step}"
        for queue in queues
        for step in KOMBU_PRIORITY_STEPS
    ]


# KEYS: every queue list, then the unacked hash. Returns their messages.
_SNAPSHOT = """
local out = {}
for i = 1, #KEYS - 1 do
  for _, raw in ipairs(redis.call('LRANGE', KEYS[i], 0, -1)) do out[#out + 1] = raw end
end
for _, raw in ipairs(redis.call('HVALS', KEYS[#KEYS])) do out[#out + 1] = raw end
return out
"""

# KEYS: the active set. ARGV: job id, cutoff, now. Re-scores the job to now
# if it is still silent since the cutoff: 1, ours to look at; 0, taken by
# another worker (or active again).
_CLAIM = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""


@dataclass(slots=True)
class Snapshot:
    """The chunk and plan tasks that exist, per job."""

    chunks: dict[str, set[int]] = field(default_factory=dict)
    plans: dict[str, list[int]] = field(default_factory=dict)  # first_chunk of each


# Each task's arguments by name, as worker/tasks.py declares them.
_ARG_NAMES = {keys.SEND_CHUNK: ("job_id", "chunk_no"), keys.PLAN_JOB: ("job_id", "first_chunk")}


def parse_task(raw: bytes) -> tuple[str, str, int] | None:
    """(task, job id, chunk or first chunk) of a kombu message (a queue
    entry, or an ``unacked`` value) for a send_chunk or plan_job task in
    Celery's message protocol 2; None for anything else."""
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # unacked: [message, exchange, routing key]
            message = message[0]
        task = message["headers"]["task"]
        if task not in _ARG_NAMES:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs = json.loads(body)[:2]
        first, second = _ARG_NAMES[task]
        named = dict(zip((first, second), args, strict=False)) | kwargs
        number = named.get(second, 0) if task == keys.PLAN_JOB else named[second]
        return str(task), str(named[first]), int(number)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def snapshot(client: redis.Redis) -> Snapshot:
    lists = queue_lists()
    raws = cast(list[bytes], client.eval(_SNAPSHOT, len(lists) + 1, *lists, KOMBU_UNACKED))
    found = Snapshot()
    for parsed in map(parse_task, raws):
        if parsed is None:
            continue
        task, job_id, number = parsed
        if task == keys.SEND_CHUNK:
            found.chunks.setdefault(job_id, set()).add(number)
        else:
            found.plans.setdefault(job_id, []).append(number)
    return found


def claim(client: redis.Redis, job_id: str, cutoff_s: float, now: float) -> bool:
    return bool(client.eval(_CLAIM, 1, keys.ACTIVE, job_id, repr(cutoff_s), repr(now)))


def open_chunks(client: redis.Redis, job_id: str, n_chunks: int) -> list[int]:
    """The job's chunks that are neither done nor leased."""
    done = cast(bytes | None, client.get(keys.done(job_id))) or b""
    not_done = [c for c in range(n_chunks) if not _bit(done, c)]
    pipe = client.pipeline(transaction=False)
    for chunk_no in not_done:
        pipe.exists(keys.lease(job_id, chunk_no))
    return [c for c, leased in zip(not_done, pipe.execute(), strict=True) if not leased]


def _bit(bitmap: bytes, n: int) -> bool:
    byte = n // 8
    return byte < len(bitmap) and bool(bitmap[byte] & (0x80 >> (n % 8)))


@dataclass(slots=True)
class _Silent:
    job_id: str
    state: str
    priority: str
    open_chunks: list[int]


class Watchdog(Periodic):
    """Re-enqueues lost plan and chunk tasks until stopped."""

    failure_event = "watchdog_sweep_failed"

    def __init__(
        self,
        client: redis.Redis,
        stall_s: float,
        enqueue_plan: Callable[[str, str], None],
        enqueue_chunk: Callable[[str, int, str], None],
        interval_s: float = RESTORE_SWEEP_S,
        enqueue_cancel: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__("smsbulk-watchdog", interval_s)
        self.client = client
        self.stall_s = stall_s
        self.enqueue_plan = enqueue_plan  # (job id, priority)
        self.enqueue_chunk = enqueue_chunk  # (job id, chunk, queue)
        # (job id, priority); none: cancelled jobs are only unlisted once settled.
        self.enqueue_cancel = enqueue_cancel or (lambda job_id, priority: None)

    def sweep(self, now: float | None = None) -> int:
        """Look at every job silent for ``stall_s``; returns the tasks enqueued."""
        enqueued = 0
        while not self.stopping.is_set():
            at = now_s() if now is None else now
            cutoff_s = at - self.stall_s
            ids = cast(
                list[bytes],
                self.client.zrangebyscore(keys.ACTIVE, "-inf", cutoff_s, start=0, num=CLAIM_BATCH),
            )
            # A claim re-scores the job to now, so the next read finds the rest.
            claimed = [i.decode() for i in ids if claim(self.client, i.decode(), cutoff_s, at)]
            enqueued += self.look_at(claimed)
            if len(ids) < CLAIM_BATCH:
                break
        return enqueued

    def look_at(self, job_ids: list[str]) -> int:
        """Reconcile claimed jobs; returns the tasks enqueued."""
        silent = [job for job in map(self._silent, job_ids) if job is not None]
        if not silent:
            return 0
        # The snapshot comes after the chunks were found open: a chunk whose
        # task ran meanwhile is then either referenced (its message unacked,
        # or the next pass's queued) or done, which is read again below.
        found = snapshot(self.client)
        enqueued = 0
        for job in silent:
            if job.state == "queued":
                if job.job_id not in found.plans:
                    self.enqueue_plan(job.job_id, job.priority)
                    log.warning("plan_task_requeued", job_id=job.job_id)
                    enqueued += 1
                continue
            enqueued += self._requeue_chunks(job, found)
        return enqueued

    def _silent(self, job_id: str) -> _Silent | None:
        """The job if it may miss a task; else None, unlisted if it needs no watch."""
        raw_state, raw_spec, raw_total, raw_chunk_size = cast(
            list[bytes | None],
            self.client.hmget(keys.job(job_id), ["state", "spec", "total", "chunk_size"]),
        )
        state = raw_state.decode() if raw_state else None
        if state not in ("queued", "running", "cancelled") or raw_spec is None:
            # Ended or gone: nothing to watch. Paused or scheduled: the
            # resume or the release plans it again, and lists it again.
            self.client.zrem(keys.ACTIVE, job_id)
            return None
        priority = str(json.loads(raw_spec).get("priority", "normal"))
        if state == "cancelled":
            self._settle_cancelled(job_id, priority)
            return None
        if state == "queued":
            return _Silent(job_id, state, priority, [])
        n_chunks = chunk_count(int(raw_total or 0), int(raw_chunk_size or 0) or keys.BLOCK_SIZE)
        chunks = open_chunks(self.client, job_id, n_chunks)
        if not chunks:
            # Every chunk done or leased. All done and still running: nothing
            # is left to send, so its plan task ends it (worker/tasks.py).
            done = cast(bytes | None, self.client.get(keys.done(job_id))) or b""
            if all(_bit(done, c) for c in range(n_chunks)):
                self.enqueue_plan(job_id, priority)
                log.warning("job_end_requested", job_id=job_id)
            return None
        return _Silent(job_id, state, priority, chunks)

    def _settle_cancelled(self, job_id: str, priority: str) -> None:
        """A cancelled job is watched until its sweep has settled every
        recipient: settled, it is unlisted; else its sweep went silent (its
        task lost, or given up), and is published again."""
        if finish_if_final(self.client, job_id):
            return
        self.enqueue_cancel(job_id, priority)
        log.warning("cancel_task_requeued", job_id=job_id)

    def _requeue_chunks(self, job: _Silent, found: Snapshot) -> int:
        referenced = found.chunks.get(job.job_id, set())
        # A follow-up plan task (first_chunk > 0) still to enqueue the rest.
        planned_from = min((f for f in found.plans.get(job.job_id, []) if f > 0), default=None)
        done = cast(bytes | None, self.client.get(keys.done(job.job_id))) or b""
        lost = [
            c
            for c in job.open_chunks
            if c not in referenced
            and not _bit(done, c)
            and (planned_from is None or c < planned_from)
        ]
        queue = queue_for(job.priority)
        for chunk_no in lost:
            self.enqueue_chunk(job.job_id, chunk_no, queue)
        if lost:
            log.warning("chunk_tasks_requeued", job_id=job.job_id, chunks=len(lost))
        return len(lost)

    def step(self) -> None:
        self.sweep()
