"""After ``cancel``: every recipient not yet sent becomes ``cancelled``.

The sweep takes each chunk's lease in turn, so it never races a pass that
is still recording a request in flight: it settles what that pass left
once the pass has ended. A request left in ``sending`` under a lease that
expired was a killed worker's (a live pass holds its lease until it ends,
and the task time limit ends it first): ``unknown`` under at_most_once (it
may have been sent); under at_least_once it would have been sent again, and
is now cancelled instead.

A sweep never waits on a lease for longer than its budget (a killed
worker's lease outlives the sweep's time limit): it settles every other
chunk and hands the busy ones back (``Sweep.busy``), and the cancel task
comes back for them once their leases may have run out. A chunk it settled
is marked done (``keys.done``, the same bit a pass sets when a chunk has
nothing left), so a later sweep skips it; the last one settles the job
(``ResultsStore.mark_chunk_done``), which the watchdog watches until then.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from producer.core.keys import BLOCK_SIZE
from worker.ops.logs import get_logger
from worker.pipeline.chunking import chunk_count, chunk_range
from worker.pipeline.outcomes import is_final, simple
from worker.store import JobRecord, ResultsStore, new_token

LEASE_POLL_S = 0.1
log = get_logger()


@dataclass(slots=True)
class Sweep:
    cancelled: int = 0  # recipients settled by this sweep
    busy: list[int] = field(default_factory=list)  # chunks still leased: for a later sweep
    busy_for_s: float = 0.0  # the longest of their leases' remaining times


def _bit(bitmap: bytes, n: int) -> bool:
    byte = n // 8
    return byte < len(bitmap) and bool(bitmap[byte] & (0x80 >> (n % 8)))


async def cancel_chunk(store: ResultsStore, job: JobRecord, chunk_no: int, chunk_size: int) -> int:
    """Settle the chunk (its lease held by the caller) and mark it done."""
    indices = chunk_range(chunk_no, job.total, chunk_size)
    data = await store.chunk(job.job_id, chunk_no, indices)
    at_most_once = job.settings.at_most_once
    interrupted = {rid: s for rid, s in data.requests.items() if s.get("s") == "sending"}
    in_flight = {index for state in interrupted.values() for index in state["i"]}
    settled = {}
    for index, _ in data.messages:
        previous = data.outcomes.get(index)
        if is_final(previous):
            continue
        if index in in_flight and at_most_once:
            settled[index] = simple(
                "unknown",
                previous,
                error_code="interrupted",
                error="the worker stopped while the request was in flight",
            )
        else:
            settled[index] = simple("cancelled", previous, error="the job was cancelled")
    if interrupted:
        log.warning(
            "interrupted_request_settled",
            job_id=job.job_id,
            chunk=chunk_no,
            requests=len(interrupted),
            recipients=len(in_flight),
            policy=job.settings.delivery_policy,
        )
    if settled:
        await store.commit(job.job_id, chunk_no, settled)
    # Requests that never finished are settled above: forget them, so that a
    # later retry does not settle them a second time.
    await store.drop_requests(
        job.job_id,
        chunk_no,
        [rid for rid, state in data.requests.items() if state.get("s") != "done"],
    )
    await store.mark_chunk_done(job, chunk_no)
    return len(settled)


async def _try_chunk(
    store: ResultsStore, job: JobRecord, chunk_no: int, chunk_size: int, lease_ttl_s: int
) -> int | None:
    """Settle the chunk if its lease is free: how many recipients; None if busy."""
    token = new_token()
    if not await store.acquire_lease(job.job_id, chunk_no, token, lease_ttl_s):
        return None
    try:
        return await cancel_chunk(store, job, chunk_no, chunk_size)
    finally:
        await store.release_lease(job.job_id, chunk_no, token)


async def sweep_cancelled(
    store: ResultsStore, job: JobRecord, lease_ttl_s: int, budget_s: float
) -> Sweep:
    """Cancel what is left of every chunk not done, for at most ``budget_s``
    (then what is left is ``busy``, for another sweep)."""
    # A job cancelled before it was planned has no chunks yet: use blocks.
    chunk_size = job.chunk_size or BLOCK_SIZE
    done = await store.done_chunks(job.job_id)
    todo = [c for c in range(chunk_count(job.total, chunk_size)) if not _bit(done, c)]
    deadline = time.monotonic() + budget_s
    sweep = Sweep()
    while todo:
        busy = []
        for position, chunk_no in enumerate(todo):
            if time.monotonic() > deadline:
                busy.extend(todo[position:])
                break
            settled = await _try_chunk(store, job, chunk_no, chunk_size, lease_ttl_s)
            if settled is None:
                busy.append(chunk_no)
            else:
                sweep.cancelled += settled
        todo = busy
        if not todo or time.monotonic() + LEASE_POLL_S > deadline:
            break
        await asyncio.sleep(LEASE_POLL_S)  # a pass in flight ends, or a dead one's lease expires
    sweep.busy = todo
    if todo:
        ttls = [await store.lease_ttl_s(job.job_id, c) for c in todo]
        sweep.busy_for_s = max(ttls)
    return sweep
