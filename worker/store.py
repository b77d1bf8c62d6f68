"""The workers' side of the Redis store: chunk data, request states, commits.

A chunk's provider requests go pending -> sending (attempt, time) -> done,
each state in ``job:{id}:r:{chunk}``. Outcomes, the job's counters, the
request's transition to done and the job's completion are written by one
Lua script: one round trip, atomic, and fenced by the request's token so a
worker that lost its chunk cannot overwrite the one that took it over.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from producer.core import keys
from producer.core.settings import JobSettings, settings_of
from producer.core.store import (
    STATUS_CODES,
    StoredMessage,
    StoredOutcome,
    block_of,
    decode_block,
    decode_outcome,
    encode_outcome,
    now_s,
)
from producer.job import FINAL_STATUSES

FINAL_CODES = [STATUS_CODES[name] for name in FINAL_STATUSES]
# What a commit returns when it wrote no outcome (see _COMMIT).
NOTHING_WRITTEN = frozenset({"fenced", "gone"})

# The one place that ends a job once every recipient is final (a Lua
# function that the scripts below begin with): a queued or running job is
# completed (finished_at, listed for retention) and a cancelled one is
# settled; either way the watchdog's active set no longer lists it. Not while
# a retry's reset is under way (the job hash's ``retry``, producer/control.py):
# its counters still count the recipients about to be set back to pending.
# Returns true if it ended the job.
_FINISH_IF_FINAL = """
local function finish_if_final(job, finished, active, final_codes, now, job_id)
  local state = redis.call('HGET', job, 'state')
  if state ~= 'queued' and state ~= 'running' and state ~= 'cancelled' then return false end
  if redis.call('HEXISTS', job, 'retry') == 1 then return false end
  local done = 0
  for _, code in ipairs(cjson.decode(final_codes)) do
    done = done + tonumber(redis.call('HGET', job, 'n:' .. code) or '0')
  end
  if done < tonumber(redis.call('HGET', job, 'total')) then return false end
  if state ~= 'cancelled' then
    redis.call('HSET', job, 'state', 'completed', 'finished_at', now)
    redis.call('ZADD', finished, now, job_id)
  end
  redis.call('ZREM', active, job_id)
  return true
end
"""

# KEYS: job hash, outcomes hash, requests hash, finished set, active set
# ARGV: request id ('' for none), fencing token, done-state JSON, now,
#       final status codes JSON, job id, then the outcomes as one string of
#       "index\toutcome JSON\n" records (see ``outcome_records``).
# Returns the job's state after the commit, 'fenced' if the request is no
# longer ours, or 'gone' if the job was removed (retention): nothing written
# then, so a late commit never leaves a stray counter-only job hash behind.
# A commit to a queued, running or cancelled job is its activity (the job's
# score in the active set, read by worker/background/watchdog.py) until its last
# recipient is final (``finish_if_final``).
#
# One string rather than an argument per outcome, and one HMGET/HSET per
# 1000 outcomes rather than a call each: a chunk's commit was the largest
# Redis cost per recipient. An outcome's status code is its 3rd character.
_COMMIT = (
    _FINISH_IF_FINAL
    + """
local job, outcomes, requests = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', job) == 0 then return 'gone' end
if ARGV[1] ~= '' then
  local current = redis.call('HGET', requests, ARGV[1])
  if not current or not string.find(current, ARGV[2], 1, true) then return 'fenced' end
  redis.call('HSET', requests, ARGV[1], ARGV[3])
end
local final = {}
for _, code in ipairs(cjson.decode(ARGV[5])) do final[code] = true end
local indices, values = {}, {}
for index, value in string.gmatch(ARGV[7], '([^\\t\\n]+)\\t([^\\n]+)') do
  indices[#indices + 1] = index
  values[#values + 1] = value
end
local delta = {}
for first = 1, #indices, 1000 do
  local last = math.min(first + 999, #indices)
  local old = redis.call('HMGET', outcomes, unpack(indices, first, last))
  local fields = {}
  for k = first, last do
    local old_code = old[k - first + 1] and string.sub(old[k - first + 1], 3, 3) or 'p'
    local new_code = string.sub(values[k], 3, 3)
    if old_code ~= new_code then
      if final[old_code] then delta[old_code] = (delta[old_code] or 0) - 1 end
      if final[new_code] then delta[new_code] = (delta[new_code] or 0) + 1 end
    end
    fields[#fields + 1] = indices[k]
    fields[#fields + 1] = values[k]
  end
  redis.call('HSET', outcomes, unpack(fields))
end
for code, n in pairs(delta) do
  if n ~= 0 then redis.call('HINCRBY', job, 'n:' .. code, n) end
end
if finish_if_final(job, KEYS[4], KEYS[5], ARGV[5], ARGV[4], ARGV[6]) then
  return redis.call('HGET', job, 'state')
end
local state = redis.call('HGET', job, 'state')
if state == 'running' or state == 'queued' or state == 'cancelled' then
  redis.call('ZADD', KEYS[5], ARGV[4], ARGV[6])
end
return state
"""
)


def finish_if_final(client: redis.Redis, job_id: str) -> bool:
    """``ResultsStore.finish_if_final`` for a synchronous client (the watchdog)."""
    finished = client.eval(
        _FINISH,
        3,
        keys.job(job_id),
        keys.FINISHED,
        keys.ACTIVE,
        json.dumps(FINAL_CODES),
        repr(now_s()),
        job_id,
    )
    return bool(finished)


def outcome_records(outcomes: dict[int, StoredOutcome]) -> str:
    """The commit script's outcomes argument. An encoded outcome is JSON,
    which escapes every tab and newline, so neither occurs inside one."""
    return "".join(f"{index}\t{encode_outcome(outcome)}\n" for index, outcome in outcomes.items())


# KEYS: job hash, requests hash, the chunk's lease.
# ARGV: request id, sending-state JSON, the lease token of the pass.
# A request starts only while its job is running (after a pause or a cancel
# returns, no new provider request of the job starts), only while the pass
# that planned it still holds the chunk's lease, and only while it is still
# pending: never once another pass has dropped, settled or begun it.
# Returns 'begun', 'stopped' (the job does not run), 'lease' (the pass lost
# the chunk) or 'taken' (the request is no longer pending). The very same
# sending state (its request token) is this call run again: redis-py sends a
# script again when its reply was lost (a Redis restart), and the first run
# began the request; answering 'taken' then would leave it `sending`, unsent,
# and make it `unknown`.
_BEGIN = """
local current = redis.call('HGET', KEYS[2], ARGV[1])
if current == ARGV[2] then return 'begun' end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'running' and state ~= 'queued' then return 'stopped' end
if redis.call('GET', KEYS[3]) ~= ARGV[3] then return 'lease' end
if not current or cjson.decode(current)['s'] ~= 'pending' then return 'taken' end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 'begun'
"""

# ARGV: the final status codes (JSON). A cancelled job is reported once its
# sweep has settled every recipient, not when a request in flight ends first.
_CLAIM_CALLBACK = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'completed' and state ~= 'cancelled' then return 0 end
local done = 0
for _, code in ipairs(cjson.decode(ARGV[1])) do
  done = done + tonumber(redis.call('HGET', KEYS[1], 'n:' .. code) or '0')
end
if done < tonumber(redis.call('HGET', KEYS[1], 'total')) then return 0 end
return redis.call('HSETNX', KEYS[1], 'callback', '1')
"""

# KEYS: job hash, done bitmap, finished set, active set. ARGV: the run the
# pass read, chunk number, final status codes JSON, now, job id. A chunk with
# nothing left may be the job's last: a pass that found nothing to send (the
# job's last commit landed while it was paused, say) ends the job.
_MARK_DONE = (
    _FINISH_IF_FINAL
    + """
if tonumber(redis.call('HGET', KEYS[1], 'run') or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('SETBIT', KEYS[2], ARGV[2], 1)
finish_if_final(KEYS[1], KEYS[3], KEYS[4], ARGV[3], ARGV[4], ARGV[5])
return 1
"""
)

# KEYS: job hash, finished set, active set. ARGV: final status codes JSON,
# now, job id. Returns 1 if it ended the job.
_FINISH = (
    _FINISH_IF_FINAL
    + """
if finish_if_final(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3]) then return 1 end
return 0
"""
)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


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


class ResultsStore:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._commit = client.register_script(_COMMIT)
        self._release = client.register_script(_RELEASE)
        self._mark_done = client.register_script(_MARK_DONE)
        self._finish = client.register_script(_FINISH)
        self._begin = client.register_script(_BEGIN)
        self._claim_callback = client.register_script(_CLAIM_CALLBACK)
        self._final_codes = json.dumps(FINAL_CODES)

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
        await self._release(keys=[keys.lease(job_id, chunk_no)], args=[token])

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
    ) -> str:
        """Mark a pending request ``sending`` (see _BEGIN): ``begun``, or why
        not: ``stopped`` (paused or cancelled), ``lease`` or ``taken``."""
        answer = await self._begin(
            keys=[keys.job(job_id), keys.requests(job_id, chunk_no), keys.lease(job_id, chunk_no)],
            args=[request_id, json.dumps(state, separators=(",", ":")), lease_token],
        )
        return str(answer.decode() if isinstance(answer, bytes) else answer)

    async def claim_callback(self, job_id: str) -> bool:
        """True once per ended job whose every recipient is final: whoever
        gets it sends the callback."""
        claimed = await self._claim_callback(keys=[keys.job(job_id)], args=[self._final_codes])
        return bool(claimed)

    async def drop_requests(self, job_id: str, chunk_no: int, request_ids: list[str]) -> None:
        """Forget requests that were planned but never started."""
        if request_ids:
            await self.redis.hdel(keys.requests(job_id, chunk_no), *request_ids)

    async def mark_chunk_done(self, job: JobRecord, chunk_no: int) -> None:
        """Record that the chunk has nothing left to send: the watchdog does
        not look for its task any more, nor a cancel's sweep at the chunk
        (until a retry reopens the job); if it was the job's last, end the
        job. Only while the job is in the run the pass read: a pass that ends
        after a retry restarted the job saw outcomes from before it."""
        job_id = job.job_id
        await self._mark_done(
            keys=[keys.job(job_id), keys.done(job_id), keys.FINISHED, keys.ACTIVE],
            args=[job.run, chunk_no, self._final_codes, repr(now_s()), job_id],
        )

    async def finish_if_final(self, job_id: str) -> bool:
        """End the job if every recipient is final (``_FINISH_IF_FINAL``):
        True if this call completed it, or settled its cancellation."""
        finished = await self._finish(
            keys=[keys.job(job_id), keys.FINISHED, keys.ACTIVE],
            args=[self._final_codes, repr(now_s()), job_id],
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
        """Write outcomes (and a request's transition to done) atomically."""
        if not outcomes and not request_id:
            return ""
        block_no = block_of(next(iter(outcomes))) if outcomes else 0
        args: list[str | int | float] = [
            request_id,
            token,
            json.dumps(done_state or {}, separators=(",", ":")),
            repr(now_s()),
            self._final_codes,
            job_id,
            outcome_records(outcomes),
        ]
        result = await self._commit(
            keys=[
                keys.job(job_id),
                keys.outcomes(job_id, block_no),
                keys.requests(job_id, chunk_no),
                keys.FINISHED,
                keys.ACTIVE,
            ],
            args=args,
        )
        return str(result.decode() if isinstance(result, bytes) else result)
