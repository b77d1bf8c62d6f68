"""After ``cancel``: every recipient not yet sent becomes ``cancelled``.

The sweep takes each chunk's lease in turn, so it never races a pass that
is still recording a request in flight: it waits for that pass to end, then
settles what is left. A request a killed worker left in ``sending`` is
``unknown`` under at_most_once (it may have been sent); under
at_least_once it would have been sent again, and is now cancelled instead.

The chunks it settles are not marked done (``keys.done``): the cancel took
the job off the watchdog's list, and a retry that reopens it clears the
marks anyway.
"""

from __future__ import annotations

import asyncio
import time

from producer.keys import BLOCK_SIZE
from worker.chunking import chunk_count, chunk_range
from worker.outcomes import is_final, simple
from worker.results_store import JobSpec, ResultsStore, new_token

LEASE_POLL_S = 0.1


async def cancel_chunk(store: ResultsStore, job: JobSpec, chunk_no: int, chunk_size: int) -> int:
    indices = chunk_range(chunk_no, job.total, chunk_size)
    data = await store.chunk(job.job_id, chunk_no, indices)
    at_most_once = job.spec.get("delivery_policy", "at_most_once") == "at_most_once"
    in_flight = {
        index
        for state in data.requests.values()
        if state.get("s") == "sending"
        for index in state["i"]
    }
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
    if settled:
        await store.commit(job.job_id, chunk_no, settled)
    # Requests that never finished are settled above: forget them, so that a
    # later retry does not settle them a second time.
    await store.drop_requests(
        job.job_id,
        chunk_no,
        [rid for rid, state in data.requests.items() if state.get("s") != "done"],
    )
    return len(settled)


async def sweep_cancelled(store: ResultsStore, job: JobSpec, lease_ttl_s: int) -> int:
    """Cancel what is left of every chunk; returns how many recipients."""
    # A job cancelled before it was planned has no chunks yet: use blocks.
    chunk_size = job.chunk_size or BLOCK_SIZE
    cancelled = 0
    for chunk_no in range(chunk_count(job.total, chunk_size)):
        token = new_token()
        deadline = time.monotonic() + lease_ttl_s + 5
        while not await store.acquire_lease(job.job_id, chunk_no, token, lease_ttl_s):
            if time.monotonic() > deadline:
                raise TimeoutError(f"chunk {chunk_no} stayed leased")
            await asyncio.sleep(LEASE_POLL_S)
        try:
            cancelled += await cancel_chunk(store, job, chunk_no, chunk_size)
        finally:
            await store.release_lease(job.job_id, chunk_no, token)
    return cancelled
