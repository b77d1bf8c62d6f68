"""The workers' side of the Redis store: chunk data, request states, commits.

A chunk's provider requests go pending -> sending (attempt, time) -> done,
each state in ``job:{id}:r:{chunk}``. Outcomes, the job's counters, the
request's transition to done and the job's completion are written by one
Lua script: one round trip, atomic, and fenced by the request's token so a
worker that lost its chunk cannot overwrite the one that took it over.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from producer.core import keys
from producer.core.scripts import async_script, script
from producer.core.settings import JobSettings, settings_of
from producer.core.store import (
    StoredMessage,
    StoredOutcome,
    block_of,
    decode_block,
    decode_outcome,
    encode_outcome,
    now_s,
)

# What a commit returns when it wrote no outcome (producer/core/lua/commit_outcomes.lua).
NOTHING_WRITTEN = frozenset({"fenced", "gone"})


def finish_if_final(client: redis.Redis, job_id: str) -> bool:
    """``ResultsStore.finish_if_final`` for a synchronous client (the watchdog)."""
    finished = script("finish_job")(
        keys=[keys.job(job_id), keys.FINISHED, keys.ACTIVE],
        args=[repr(now_s()), job_id],
        client=client,
    )
    return bool(finished)


def outcome_records(outcomes: dict[int, StoredOutcome]) -> str:
    """The commit script's outcomes argument. An encoded outcome is JSON,
    which escapes every tab and newline, so neither occurs inside one."""
    return "".join(f"{index}\t{encode_outcome(outcome)}\n" for index, outcome in outcomes.items())


def _accounts_of(outcomes: dict[int, StoredOutcome]) -> str:
    """The commit script's accounts argument: '' unless an outcome has one."""
    if not any(outcome.account for outcome in outcomes.values()):
        return ""
    return "".join(f"{outcome.account or ''}\n" for outcome in outcomes.values())


# How long an account refused for its credentials stays stopped; a worker
# restart (new configuration) lifts the block at once.
ACCOUNT_BLOCK_S = 600


@dataclass(slots=True)
class JobRecord:
    """The worker's view of a job, read from its hash (``ResultsStore.job``)."""

    job_id: str
    settings: JobSettings
    state: str
    total: int
    chunk_size: int
    created_at: float
    run: int = 0  # the job's `run` when read: a retry starts a new one


@dataclass(slots=True)
class ChunkData:
    messages: list[tuple[int, StoredMessage]]
    outcomes: dict[int, StoredOutcome]
    requests: dict[str, dict[str, Any]]


def new_token() -> str:
    return uuid.uuid4().hex


def _text(answer: Any) -> str:
    return str(answer.decode() if isinstance(answer, bytes) else answer)


class Durability:
    """How a request's ``sending`` state is made to outlive the Redis
    server that took it (``[settings] durable_sends``): with a replica
    connected, ``WAIT 1 T`` (on a replica, so a failover keeps it); without
    one, ``WAITAOF 1 0 T`` (fsynced to the local append-only file, so a
    crash keeps it; an error without ``appendonly yes``). Which of the two
    is looked up again every ``RECHECK_S``: a failover or a new replica
    changes it, and INFO per request would cost a round trip."""

    RECHECK_S = 5.0

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._replica = False
        self._checked_at: float | None = None

    async def uses_replica(self) -> bool:
        now = time.monotonic()
        if self._checked_at is None or now - self._checked_at > self.RECHECK_S:
            info = await self.redis.info("replication")
            self._replica = int(info.get("connected_slaves", 0)) > 0
            self._checked_at = now
        return self._replica

    @staticmethod
    def acknowledged(reply: Any, replicated: bool) -> bool:
        """WAIT answers how many replicas have the writes; WAITAOF, how many
        fsynced them locally and on replicas (an error: no append-only file)."""
        if isinstance(reply, Exception):
            return False
        if replicated:
            return int(reply) >= 1
        return int(reply[0]) >= 1


class ResultsStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self.durability = Durability(client)
        self._commit = async_script("commit_outcomes")
        self._release = async_script("release_lease")
        self._mark_done = async_script("mark_chunk_done")
        self._finish = async_script("finish_job")
        self._begin = async_script("begin_request")
        self._claim_callback = async_script("claim_callback")

    async def job(self, job_id: str) -> JobRecord | None:
        spec, state, total, chunk_size, created_at, run = cast(
            list[bytes],
            await self.redis.hmget(
                keys.job(job_id), ["spec", "state", "total", "chunk_size", "created_at", "run"]
            ),
        )
        if spec is None:
            return None
        return JobRecord(
            job_id=job_id,
            settings=settings_of(spec),
            state=state.decode(),
            total=int(total),
            chunk_size=int(chunk_size or 0),
            created_at=float(created_at),
            run=int(run or 0),
        )

    async def acquire_lease(self, job_id: str, chunk_no: int, token: str, ttl_s: int) -> bool:
        return bool(await self.redis.set(keys.lease(job_id, chunk_no), token, nx=True, ex=ttl_s))

    async def release_lease(self, job_id: str, chunk_no: int, token: str) -> None:
        await self._release(keys=[keys.lease(job_id, chunk_no)], args=[token], client=self.redis)

    async def chunk(self, job_id: str, chunk_no: int, indices: range) -> ChunkData:
        block_no = block_of(indices.start)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(keys.block(job_id, block_no))
        pipe.hmget(keys.outcomes(job_id, block_no), [str(i) for i in indices])
        pipe.hgetall(keys.requests(job_id, chunk_no))
        raw_block, raw_outcomes, raw_requests = await pipe.execute()
        if raw_block is None:
            raise LookupError(f"job {job_id}: messages of block {block_no} are gone")
        block = decode_block(raw_block)
        base = block_no * keys.BLOCK_SIZE
        return ChunkData(
            messages=[(i, block[i - base]) for i in indices],
            outcomes={
                i: decode_outcome(raw)
                for i, raw in zip(indices, raw_outcomes, strict=True)
                if raw is not None
            },
            requests={k.decode(): json.loads(v) for k, v in raw_requests.items()},
        )

    async def set_requests(
        self, job_id: str, chunk_no: int, states: dict[str, dict[str, Any]]
    ) -> None:
        if states:
            await self.redis.hset(
                keys.requests(job_id, chunk_no),
                mapping={k: json.dumps(v, separators=(",", ":")) for k, v in states.items()},
            )

    async def begin_request(
        self,
        job_id: str,
        chunk_no: int,
        request_id: str,
        state: dict[str, Any],
        lease_token: str,
        durable_ms: int = 0,
    ) -> str:
        """Mark a pending request ``sending`` (begin_request.lua): ``begun``, or why
        not: ``stopped`` (paused or cancelled), ``lease`` or ``taken``.

        ``durable_ms`` > 0 (``[settings] durable_sends``): ``begun`` only
        once the state is also on a replica or on disk (``Durability``),
        waiting at most that long; else ``not_durable`` (the state is
        ``sending`` on this server only: the caller must not send, and drops it)."""
        script_keys = [
            keys.job(job_id),
            keys.requests(job_id, chunk_no),
            keys.lease(job_id, chunk_no),
        ]
        args = [request_id, json.dumps(state, separators=(",", ":")), lease_token]
        if not durable_ms:
            answer = await self._begin(keys=script_keys, args=args, client=self.redis)
            return _text(answer)
        # WAIT and WAITAOF count the writes of their own connection: the
        # script and the wait go down one connection, in one round trip.
        pipe = self.redis.pipeline(transaction=False)
        await self._begin(keys=script_keys, args=args, client=pipe)
        replicated = await self.durability.uses_replica()
        if replicated:
            pipe.execute_command("WAIT", 1, durable_ms)
        else:
            pipe.execute_command("WAITAOF", 1, 0, durable_ms)
        answer, acked = await pipe.execute(raise_on_error=False)
        if isinstance(answer, Exception):
            raise answer
        begun = _text(answer)
        if begun == "begun" and not Durability.acknowledged(acked, replicated):
            return "not_durable"
        return begun

    async def claim_callback(self, job_id: str) -> bool:
        """True once per ended job whose every recipient is final: whoever
        gets it sends the callback."""
        claimed = await self._claim_callback(keys=[keys.job(job_id)], client=self.redis)
        return bool(claimed)

    async def drop_requests(self, job_id: str, chunk_no: int, request_ids: list[str]) -> None:
        """Forget requests that were planned but never started."""
        if request_ids:
            await self.redis.hdel(keys.requests(job_id, chunk_no), *request_ids)

    async def park_chunk(self, job_id: str, chunk_no: int, due_s: float) -> None:
        """List the chunk in ``smsbulk:parked`` until ``due_s`` (epoch s):
        the releaser (worker/background/releaser.py) enqueues its pass then."""
        await self.redis.zadd(keys.PARKED, {keys.parked(job_id, chunk_no): due_s})

    async def mark_chunk_done(self, job: JobRecord, chunk_no: int) -> None:
        """Record that the chunk has nothing left to send: the watchdog does
        not look for its task any more, nor a cancel's sweep at the chunk
        (until a retry reopens the job); if it was the job's last, end the
        job. Only while the job is in the run the pass read: a pass that ends
        after a retry restarted the job saw outcomes from before it."""
        job_id = job.job_id
        await self._mark_done(
            keys=[keys.job(job_id), keys.done(job_id), keys.FINISHED, keys.ACTIVE],
            args=[job.run, chunk_no, repr(now_s()), job_id],
            client=self.redis,
        )

    async def finish_if_final(self, job_id: str) -> bool:
        """End the job if every recipient is final (finish_if_final.lua):
        True if this call completed it, or settled its cancellation."""
        finished = await self._finish(
            keys=[keys.job(job_id), keys.FINISHED, keys.ACTIVE],
            args=[repr(now_s()), job_id],
            client=self.redis,
        )
        return bool(finished)

    async def note_activity(self, job_id: str) -> None:
        """Work on the job goes on (a cancel's sweep waiting for a lease, say):
        the watchdog leaves a listed job alone for another while."""
        await self.redis.zadd(keys.ACTIVE, {job_id: now_s()}, xx=True)

    async def done_chunks(self, job_id: str) -> bytes:
        """The job's done bitmap (bit ``chunk``: nothing left to send)."""
        return cast(bytes | None, await self.redis.get(keys.done(job_id))) or b""

    async def lease_ttl_s(self, job_id: str, chunk_no: int) -> float:
        ttl_ms = await self.redis.pttl(keys.lease(job_id, chunk_no))
        return max(int(ttl_ms), 0) / 1000

    async def account_blocked(self, account: str) -> str | None:
        raw = cast(bytes | None, await self.redis.get(keys.account_block(account)))
        return None if raw is None else raw.decode()

    async def block_account(self, account: str, reason: str) -> None:
        """Stop an account's sending (bad credentials) instead of a retry storm."""
        await self.redis.set(keys.account_block(account), reason, ex=ACCOUNT_BLOCK_S)

    async def commit(
        self,
        job_id: str,
        chunk_no: int,
        outcomes: dict[int, StoredOutcome],
        request_id: str = "",
        token: str = "",
        done_state: dict[str, Any] | None = None,
    ) -> str:
        """Write outcomes (and a request's transition to done) atomically.
        Outcomes with an account (route jobs) are counted by it too, and
        recipients newly accepted in the job's timeline (``keys.timeline``)."""
        if not outcomes and not request_id:
            return ""
        block_no = block_of(next(iter(outcomes))) if outcomes else 0
        args: list[str | int | float] = [
            request_id,
            token,
            json.dumps(done_state or {}, separators=(",", ":")),
            repr(now_s()),
            job_id,
            outcome_records(outcomes),
            _accounts_of(outcomes),
            keys.TIMELINE_BUCKETS,
        ]
        result = await self._commit(
            keys=[
                keys.job(job_id),
                keys.outcomes(job_id, block_no),
                keys.requests(job_id, chunk_no),
                keys.FINISHED,
                keys.ACTIVE,
                keys.timeline(job_id),
            ],
            args=args,
            client=self.redis,
        )
        return str(result.decode() if isinstance(result, bytes) else result)
