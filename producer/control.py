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

from producer.core import keys
from producer.core.store import STATUS_CODES, block_count, now_s
from producer.errors import SmsbulkError
from producer.job import FINAL_STATUSES

FINAL_STATES = ("completed", "cancelled")
RETRYABLE_STATUSES = ("failed", "unknown", "expired", "cancelled")

# Every transition: KEYS: job hash, scheduled set, finished set (an ended job,
# scored by finished_at, which the workers remove after retention_days),
# active set (a queued or running job, or a cancelled one not settled yet,
# scored by its last activity, which the workers' watchdog reconciles).
# Returns the job's state, "!" appended when this call changed it.

# KEYS 5: the done bitmap. ARGV: now, job id. A cancelled job stays watched
# (active, as of now) until its sweep has settled every recipient: the
# watchdog publishes the sweep again if it goes silent (worker/background/watchdog.py).
# A retry's reset cut short by the cancel stops there; its run ends, so the
# sweep looks at every chunk again (the done bits were the previous run's).
_CANCEL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state == 'completed' or state == 'cancelled' then return state end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'retry') == 1 then
  redis.call('HDEL', KEYS[1], 'retry', 'retry_next')
  redis.call('DEL', KEYS[5])
  redis.call('HINCRBY', KEYS[1], 'run', 1)
end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[1], ARGV[2])
return 'cancelled!'
"""

_PAUSE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state == 'scheduled' or state == 'queued' or state == 'running' then
  redis.call('HSET', KEYS[1], 'state', 'paused', 'paused_from', state)
  return 'paused!'
end
return state
"""

# A job paused before its schedule waits for it again; any other resumes
# through a new plan, which enqueues every chunk (finished ones return at once),
# or completes the job if nothing is left (its last commit landed while it
# was paused; worker/tasks.py plan_job).
# ARGV: the schedule time (epoch s), job id, now. The workers push a paused
# job's release a minute on each time they look at it: it is due at its time
# again. A queued one is active again (its plan task is watched for).
_RESUME = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return false end
if state ~= 'paused' then return state end
local from = redis.call('HGET', KEYS[1], 'paused_from')
local new = from == 'scheduled' and 'scheduled' or 'queued'
redis.call('HSET', KEYS[1], 'state', new)
if new == 'scheduled' then redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2]) end
if new == 'queued' then redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2]) end
return new .. '!'
"""

# ARGV: every final status code (JSON), the codes to retry (JSON), job id, now.
# A cancelled job has ended only once its sweep has settled every recipient
# ('cancelling' until then); with nothing to retry the job stays as it is.
# A job the workers have begun to remove (retention) is gone already.
# Reopened, the job is active and queued, and records the reset it owes
# (``retry``: the codes; ``retry_next``: the first block not reset yet), so
# whoever comes next finishes it: the caller (Producer.retry), or else the
# plan task, which the caller or the watchdog enqueues. Until the reset is
# done no script completes the job (its counters still count the recipients
# to reset); then its done bitmap goes and its run moves on (restart_run).
_REOPEN = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or redis.call('HEXISTS', KEYS[1], 'removing') == 1 then return false end
if state ~= 'completed' and state ~= 'cancelled' then return state end
local function count(codes)
  local n = 0
  for _, code in ipairs(cjson.decode(codes)) do
    n = n + tonumber(redis.call('HGET', KEYS[1], 'n:' .. code) or '0')
  end
  return n
end
if count(ARGV[1]) < tonumber(redis.call('HGET', KEYS[1], 'total')) then return 'cancelling' end
if count(ARGV[2]) == 0 then return state end
redis.call('HSET', KEYS[1], 'state', 'queued', 'retry', ARGV[2], 'retry_next', 0)
redis.call('HDEL', KEYS[1], 'finished_at', 'callback')
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3])
return 'queued!'
"""

# KEYS: job hash, a block's outcomes hash. ARGV: the block's number, now.
# If the block is the next one the reopened job's reset owes, sets its
# outcomes with the retried codes back to pending (attempts start again),
# fixes the job's counters and moves ``retry_next`` on, in one step; returns
# how many. -1: not owed (reset already, by this caller or another one, or
# no reset pending: none was asked, or a cancel stopped it).
_RESET_OUTCOMES = """
local codes = redis.call('HGET', KEYS[1], 'retry')
if not codes then return -1 end
local next_block = tonumber(redis.call('HGET', KEYS[1], 'retry_next') or '0')
if next_block ~= tonumber(ARGV[1]) then return -1 end
redis.call('HSET', KEYS[1], 'retry_next', next_block + 1)
local wanted = {}
for _, code in ipairs(cjson.decode(codes)) do wanted[code] = true end
local all = redis.call('HGETALL', KEYS[2])
local n = 0
for i = 1, #all, 2 do
  local code = string.sub(all[i + 1], 3, 3)
  if wanted[code] then
    local e164 = cjson.decode(all[i + 1])[2]
    local kept = (type(e164) == 'string') and cjson.encode(e164) or 'null'
    local pending = '["p",' .. kept .. ',null,null,null,null,null,null,0,' .. ARGV[2] .. ']'
    redis.call('HSET', KEYS[2], all[i], pending)
    redis.call('HINCRBY', KEYS[1], 'n:' .. code, -1)
    n = n + 1
  end
end
return n
"""


# KEYS: job hash, done bitmap. ARGV: the job's block count. Once a retry has
# reset the outcomes of every block, every chunk runs again: the bitmap goes,
# and the job's `run` moves on, so that a pass that read the outcomes before
# the reset (and found nothing to send) sets no bit, however late it ends
# (worker/store.py); the reset is no longer owed. Once only: returns
# the job's run, new or not.
_RESTART_RUN = """
local run = tonumber(redis.call('HGET', KEYS[1], 'run') or '0')
if redis.call('HEXISTS', KEYS[1], 'retry') == 0 then return run end
if tonumber(redis.call('HGET', KEYS[1], 'retry_next') or '0') < tonumber(ARGV[1]) then
  return run
end
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[1], 'retry', 'retry_next')
return redis.call('HINCRBY', KEYS[1], 'run', 1)
"""


class JobStateConflict(SmsbulkError):
    """The job's state does not allow what was asked (HTTP 409, exit 1)."""


class InvalidRetry(SmsbulkError, ValueError):
    """Statuses that retry does not take (HTTP 422, exit 2)."""


def _transition(
    client: redis.Redis, script: str, job_id: str, *args: str, more_keys: tuple[str, ...] = ()
) -> tuple[str, bool] | None:
    job_keys = (keys.job(job_id), keys.SCHEDULED, keys.FINISHED, keys.ACTIVE, *more_keys)
    raw = client.eval(script, len(job_keys), *job_keys, *args)
    if raw is None:
        return None
    state = raw.decode() if isinstance(raw, bytes) else str(raw)
    return state.rstrip("!"), state.endswith("!")


def cancel(client: redis.Redis, job_id: str) -> tuple[str, bool] | None:
    return _transition(
        client, _CANCEL, job_id, repr(now_s()), job_id, more_keys=(keys.done(job_id),)
    )


def pause(client: redis.Redis, job_id: str) -> tuple[str, bool] | None:
    return _transition(client, _PAUSE, job_id)


def resume(client: redis.Redis, job_id: str, schedule_s: float) -> tuple[str, bool] | None:
    return _transition(client, _RESUME, job_id, repr(schedule_s), job_id, repr(now_s()))


def reopen_for_retry(
    client: redis.Redis, job_id: str, statuses: list[str]
) -> tuple[str, bool] | None:
    """Back to ``queued`` if the job has ended and has recipients to retry;
    unchanged (an ended state) if it has none."""
    final = json.dumps([STATUS_CODES[s] for s in FINAL_STATUSES])
    wanted = json.dumps([STATUS_CODES[s] for s in statuses])
    return _transition(client, _REOPEN, job_id, final, wanted, job_id, repr(now_s()))


def check_retry_statuses(statuses: list[str]) -> None:
    unknown = [s for s in statuses if s not in RETRYABLE_STATUSES]
    if unknown or not statuses:
        raise InvalidRetry(
            f"statuses: {', '.join(unknown) or 'none given'}; "
            f"retry takes {', '.join(RETRYABLE_STATUSES)}"
        )


def restart_run(client: redis.Redis, job_id: str) -> int:
    """Start the retried job's new run once every block's outcomes are reset
    (``_RESTART_RUN``); returns the job's run."""
    total = int(cast(bytes, client.hget(keys.job(job_id), "total") or b"0"))
    raw = client.eval(_RESTART_RUN, 2, keys.job(job_id), keys.done(job_id), block_count(total))
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
    script = client.register_script(_RESET_OUTCOMES)
    n_blocks = block_count(int(raw_total or 0))
    for block_no in range(int(raw_next or 0), n_blocks):
        block = keys.outcomes(job_id, block_no)
        script(keys=[keys.job(job_id), block], args=[block_no, repr(now_s())])
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
