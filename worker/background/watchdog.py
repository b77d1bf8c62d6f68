"""The watchdog: gives a task again to every chunk and plan the broker lost.

kombu's Redis transport pops a message with BRPOP and only then records it
in its ``unacked`` hash; a worker main process killed in between loses that
message for good (celery #7950, kombu #305, #1836). Every other delivered
message of a killed worker comes back from ``unacked`` after the visibility
timeout, at the consuming end of its queue. A lost message always belongs
to a worker that died, so the watchdog watches the workers:

- Each worker's main process beats every ``HEARTBEAT_S``, in a thread of its
  own so that a long look at the jobs never delays it: its id in
  ``smsbulk:workers``, scored by the server's clock.
- Every ``HEARTBEAT_S`` each watchdog removes the workers silent for
  ``WORKER_DEAD_AFTER_S`` (one script, so one watchdog finds each death)
  and, having found one, looks at once at every queued and running job. A
  chunk whose task the dead worker lost so gets one again about
  ``WORKER_DEAD_AFTER_S`` after the kill however busy its job is, on
  ``smsbulk.high`` so that no backlog delays it (kombu too puts a restored
  message where it is taken next): well within ``recovery_s`` (10 s at
  least). A look that fails puts the deaths back, for the next step.

Per-chunk silence would not do: a chunk waiting behind a backlog is as
silent as a lost one, and telling them apart means reading the queues for
every job at every sweep; a death is rare, and says when to read them.

The jobs' silence stays the fallback (a worker without heartbeats, a task
lost some other way), from our own store:

- ``smsbulk:active`` lists each queued or running job, scored by its last
  activity (submission, plan, every commit); completion and cancel unlist it.
- ``smsbulk:job:{id}:done`` has bit ``chunk`` set once the chunk's last pass
  ended with nothing left to send.
- A cancelled job stays listed until its sweep has settled every recipient
  (worker/pipeline/cancelling.py): silent and unsettled, its ``cancel_job`` task is
  published again (lost by the broker, never published by a producer that
  died, or given up); settled, it is unlisted. A running job whose every
  chunk is done gets a plan task, which completes it.

Every ``RESTORE_SWEEP_S`` one watchdog (its turn: ``smsbulk:watchdog:turn``)
claims the jobs silent for ``stall_s``, the visibility timeout (a
compare-and-set on each one's score, so a job is looked at once per
``stall_s``).

Looking at jobs, by state: a queued job without a plan task anywhere gets
one; a running job's chunks that are neither done, leased, parked (a send
window opening later: worker/background/releaser.py) nor referenced by a
task waiting on a queue or held unacknowledged get one task each.

The queues and ``unacked`` are read once per look, for all of its jobs: a
script pages through them, ``SNAPSHOT_PAGE`` messages a call so that Redis
never stalls on a backlog (1,000,000 queued messages: docs/BENCHMARKS.md),
and returns only the references of the jobs looked at, from the
``argsrepr`` header that our tasks carry (``job_id=J, chunk=N``), never a
body. A silent pass's turn lasts at least ``TURN_COST`` times its snapshot,
so the snapshots of a long backlog take a small share of Redis' time.

The pages are not one atomic read: ``unacked``, each list head to tail
(kombu pushes at the head and pops at the tail, so nothing unread moves
past the reader), then ``unacked`` again; a message that exists throughout
is seen, and so is a task that was unacknowledged at the start or popped
meanwhile. A message that is queued and then taken and acknowledged while
the read is elsewhere, or moves back from ``unacked`` to a list already
read, may be missed, like one inside a live worker's BRPOP window; its
chunk then gets a second task: harmless, like any redelivery
(the chunk's lease, its request states and the fenced commit; a pass over a
done chunk returns at once).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from producer.core import keys
from producer.core.scripts import script
from producer.core.settings import priority_of
from producer.core.store import now_s
from worker.background.periodic import Periodic
from worker.ops.logs import get_logger
from worker.ops.timing import HEARTBEAT_S, RESTORE_SWEEP_S, WORKER_DEAD_AFTER_S
from worker.pipeline.chunking import chunk_count
from worker.store import finish_if_final

log = get_logger()

CLAIM_BATCH = 100  # silent jobs claimed at a time
# Messages a snapshot script reads at a time. Each LRANGE walks the list's
# nodes to its offset (about 7 kombu messages a node), so a page must be
# large enough for that walk not to dominate: 1,000,000 queued messages
# cost 7.1 s of Valkey CPU in pages of 1000, 4.6 s in pages of 5000 (a
# loaded machine; 3.8 s when idle, docs/BENCHMARKS.md).
SNAPSHOT_PAGE = 5000
SNAPSHOT_FILTER_MAX = 100  # more jobs looked at: the snapshot returns every job's
TURN_COST = 20  # a silent pass's turn lasts at least this many times its look

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


@dataclass(slots=True)
class Snapshot:
    """The chunk, plan and cancel tasks that exist, per job."""

    chunks: dict[str, set[int]] = field(default_factory=dict)
    plans: dict[str, set[int]] = field(default_factory=dict)  # first_chunk of each
    cancels: set[str] = field(default_factory=set)

    def add(self, task: str, job_id: str, numbers: list[int]) -> None:
        if task == keys.SEND_CHUNK:
            self.chunks.setdefault(job_id, set()).update(numbers)
        elif task == keys.PLAN_JOB:
            self.plans.setdefault(job_id, set()).update(numbers)
        elif task == keys.CANCEL_JOB:
            self.cancels.add(job_id)

    def keep(self, job_ids: set[str]) -> None:
        """Forget every other job's tasks."""
        self.chunks = {j: c for j, c in self.chunks.items() if j in job_ids}
        self.plans = {j: p for j, p in self.plans.items() if j in job_ids}
        self.cancels &= job_ids


# Each task's arguments by name, as worker/tasks.py declares them.
_ARG_NAMES = {
    keys.SEND_CHUNK: ("job_id", "chunk_no"),
    keys.PLAN_JOB: ("job_id", "first_chunk"),
    keys.CANCEL_JOB: ("job_id", "-"),
}


def parse_task(raw: bytes) -> tuple[str, str, int] | None:
    """(task, job id, chunk or first chunk) of a kombu message (a queue
    entry, or an ``unacked`` value) for a send_chunk, plan_job or cancel_job
    task (0 for a cancel) in Celery's message protocol 2; None for anything
    else."""
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
        number = named[second] if task == keys.SEND_CHUNK else named.get(second, 0)
        return str(task), str(named[first]), int(number)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def snapshot(client: redis.Redis, job_ids: Collection[str] | None = None) -> Snapshot:
    """The tasks of ``job_ids`` (None: of every job) waiting on a queue or
    unacknowledged, read a page at a time."""
    found = Snapshot()
    if job_ids is not None and not job_ids:
        return found
    # `unacked` before the lists too: a pass that ends during the read (its
    # message acked, its next pass queued at a list's head already read) is seen.
    names = [KOMBU_UNACKED, *queue_lists(), KOMBU_UNACKED]
    # A long list of jobs costs every page its arguments: filter here instead.
    wanted = [] if job_ids is None or len(job_ids) > SNAPSHOT_FILTER_MAX else list(job_ids)
    key, at = 1, "0"
    while key <= len(names):
        key, raw_at, references, odd = cast(
            list[Any],
            script("watchdog_snapshot")(
                keys=names, args=[key, at, SNAPSHOT_PAGE, *wanted], client=client
            ),
        )
        at = raw_at.decode() if isinstance(raw_at, bytes) else str(raw_at)
        for group, numbers in zip(references[::2], references[1::2], strict=True):
            task, _, job_id = cast(bytes, group).decode().partition(":")
            found.add(f"smsbulk.{task}", job_id, [int(n) for n in numbers])
        for raw in odd:
            if (parsed := parse_task(raw)) is not None:
                found.add(parsed[0], parsed[1], [parsed[2]])
    if job_ids is not None and len(job_ids) > SNAPSHOT_FILTER_MAX:
        found.keep(set(job_ids))
    return found


def claim(client: redis.Redis, job_id: str, cutoff_s: float, now: float) -> bool:
    claimed = script("claim_silent_job")(
        keys=[keys.ACTIVE], args=[job_id, repr(cutoff_s), repr(now)], client=client
    )
    return bool(claimed)


def worker_id() -> str:
    """This worker main process's id in ``smsbulk:workers``: unique per start."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def beat(client: redis.Redis, worker: str) -> None:
    script("worker_beat")(keys=[keys.WORKERS], args=[worker], client=client)


def reap_dead_workers(client: redis.Redis, dead_after_s: float) -> dict[str, float]:
    """Unlist the workers without a heartbeat for ``dead_after_s``: their
    ids and last beats (server time). Each death is returned to one caller."""
    flat = cast(
        list[bytes],
        script("reap_dead_workers")(keys=[keys.WORKERS], args=[repr(dead_after_s)], client=client),
    )
    return {w.decode(): float(s) for w, s in zip(flat[::2], flat[1::2], strict=True)}


class Heartbeat(Periodic):
    """Beats for this worker main process every ``HEARTBEAT_S`` until stopped."""

    failure_event = "heartbeat_failed"

    def __init__(self, client: redis.Redis, worker: str, interval_s: float = HEARTBEAT_S) -> None:
        super().__init__("smsbulk-heartbeat", interval_s)
        self.client = client
        self.worker = worker

    def step(self) -> None:
        beat(self.client, self.worker)


def open_chunks(client: redis.Redis, job_id: str, n_chunks: int) -> list[int]:
    """The job's chunks that are neither done nor leased."""
    done = cast(bytes | None, client.get(keys.done(job_id))) or b""
    not_done = [c for c in range(n_chunks) if not _bit(done, c)]
    pipe = client.pipeline(transaction=False)
    for chunk_no in not_done:
        pipe.exists(keys.lease(job_id, chunk_no))
    return [c for c, leased in zip(not_done, pipe.execute(), strict=True) if not leased]


def _not_parked(client: redis.Redis, job_id: str, chunks: list[int]) -> list[int]:
    """The chunks that are not parked (waiting in ``smsbulk:parked`` for the
    releaser: a send window that opens later)."""
    if not chunks:
        return chunks
    scores = client.zmscore(keys.PARKED, [keys.parked(job_id, c) for c in chunks])
    return [c for c, score in zip(chunks, scores, strict=True) if score is None]


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
    """Gives lost plan and chunk tasks again until stopped: its ``step``
    every ``interval_s``, a heartbeat thread of its own."""

    failure_event = "watchdog_sweep_failed"

    def __init__(
        self,
        client: redis.Redis,
        stall_s: float,
        enqueue_plan: Callable[[str, str], None],
        enqueue_chunk: Callable[[str, int, str], None],
        interval_s: float = HEARTBEAT_S,
        silent_every_s: float = RESTORE_SWEEP_S,
        dead_after_s: float = WORKER_DEAD_AFTER_S,
        worker: str | None = None,
        enqueue_cancel: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__("smsbulk-watchdog", interval_s)
        self.client = client
        self.stall_s = stall_s
        self.enqueue_plan = enqueue_plan  # (job id, priority)
        self.enqueue_chunk = enqueue_chunk  # (job id, chunk, queue)
        self.silent_every_s = silent_every_s
        self.dead_after_s = dead_after_s
        self.heartbeat = Heartbeat(client, worker or worker_id(), interval_s)
        # (job id, priority); none: cancelled jobs are only unlisted once settled.
        self.enqueue_cancel = enqueue_cancel or (lambda job_id, priority: None)

    def start(self) -> None:
        with contextlib.suppress(redis.RedisError):  # else its thread beats soon
            beat(self.client, self.heartbeat.worker)  # watched from the start
        self.heartbeat.start()
        super().start()

    def stop(self) -> None:
        self.heartbeat.stop()
        super().stop()

    def step(self) -> None:
        """Look at every job if a worker died; at the silent jobs when due."""
        at = time.monotonic()
        dead = reap_dead_workers(self.client, self.dead_after_s)
        job_ids: list[str] = []
        if dead:
            log.warning("workers_dead", workers=sorted(dead))
            job_ids = self.watched()
        # The turn lasts silent_every_s (or more, below): whoever asks first
        # once it is over looks at the silent jobs, for all the workers.
        took_turn = self._take_turn()
        try:
            if took_turn:
                looked = set(job_ids)
                job_ids += [j for j in self.claim_silent() if j not in looked]
            self.look_at(job_ids)
        except BaseException:
            if dead:  # to be found again by the next step
                with contextlib.suppress(redis.RedisError):
                    self.client.zadd(keys.WORKERS, dead)
            raise
        if took_turn:
            # Each look costs its snapshot: a long backlog makes turns longer.
            turn_ms = int(max(self.silent_every_s, TURN_COST * (time.monotonic() - at)) * 1000)
            self.client.pexpire(keys.WATCHDOG_TURN, turn_ms, gt=True)

    def _take_turn(self) -> bool:
        turn_ms = int(self.silent_every_s * 1000)
        return bool(self.client.set(keys.WATCHDOG_TURN, self.heartbeat.worker, nx=True, px=turn_ms))

    def watched(self) -> list[str]:
        """Every queued and running job (the active index holds those, and
        jobs on their way out of it)."""
        ids = cast(list[bytes], self.client.zrange(keys.ACTIVE, 0, -1))
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(keys.job(job_id.decode()), "state")
        states = cast(list[bytes | None], pipe.execute())
        return [
            j.decode() for j, s in zip(ids, states, strict=True) if s in (b"queued", b"running")
        ]

    def sweep(self, now: float | None = None) -> int:
        """Look at every job silent for ``stall_s``; returns the tasks enqueued."""
        return self.look_at(self.claim_silent(now))

    def claim_silent(self, now: float | None = None) -> list[str]:
        """The jobs silent for ``stall_s``, each claimed (re-scored to now)."""
        claimed: list[str] = []
        at = now_s() if now is None else now
        cutoff_s = at - self.stall_s
        while not self.stopping.is_set():
            ids = cast(
                list[bytes],
                self.client.zrangebyscore(keys.ACTIVE, "-inf", cutoff_s, start=0, num=CLAIM_BATCH),
            )
            # A claim re-scores the job to now, so the next read finds the rest.
            claimed += [i.decode() for i in ids if claim(self.client, i.decode(), cutoff_s, at)]
            if len(ids) < CLAIM_BATCH:
                break
        return claimed

    def look_at(self, job_ids: list[str]) -> int:
        """Reconcile claimed jobs; returns the tasks enqueued."""
        silent = [job for job in map(self._silent, job_ids) if job is not None]
        if not silent:
            return 0
        # The snapshot comes after the chunks were found open: a chunk whose
        # task ran meanwhile is then either referenced (its message unacked,
        # or the next pass's queued) or done, which is read again below.
        found = snapshot(self.client, [job.job_id for job in silent])
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
        priority = priority_of(raw_spec)
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
        lost = _not_parked(self.client, job.job_id, lost)
        # Next in line, whatever waits on the job's own queue.
        queue = keys.HIGH_QUEUE
        for chunk_no in lost:
            self.enqueue_chunk(job.job_id, chunk_no, queue)
        if lost:
            log.warning("chunk_tasks_requeued", job_id=job.job_id, chunks=len(lost))
        return len(lost)
