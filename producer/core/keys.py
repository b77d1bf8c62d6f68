"""Redis key names, queue names and task names: one place for all of them."""

from __future__ import annotations

PREFIX = "smsbulk"

# Celery queues. `smsbulk` is the public ingest queue other applications use;
# the others are internal. Workers consume high before normal.
INGEST_QUEUE = "smsbulk"
HIGH_QUEUE = "smsbulk.high"
NORMAL_QUEUE = "smsbulk.normal"
WORKER_QUEUES = (HIGH_QUEUE, INGEST_QUEUE, NORMAL_QUEUE)

# Celery task names (explicit strings, never module paths).
SUBMIT_JOB = "smsbulk.submit_job"
PLAN_JOB = "smsbulk.plan_job"
SEND_CHUNK = "smsbulk.send_chunk"
CANCEL_JOB = "smsbulk.cancel_job"
SEND_CALLBACK = "smsbulk.send_callback"

# Messages are stored in blocks of this many, one Redis string per block, so
# a job of a million recipients is a thousand compact keys, not a million.
BLOCK_SIZE = 1000
UPLOAD_TTL_S = 3600  # how long a submission's staged blocks outlive a crashed producer

JOBS_INDEX = f"{PREFIX}:jobs"  # sorted set: job id scored by created_at
SCHEDULED = f"{PREFIX}:scheduled"  # sorted set: job id scored by schedule_at (epoch s)
FINISHED = f"{PREFIX}:finished"  # sorted set: ended job id scored by finished_at (epoch s)
# Sorted set: queued or running job id scored by its last activity (epoch s):
# submitted, planned, a commit. The workers' watchdog looks at the silent ones.
ACTIVE = f"{PREFIX}:active"
# Sorted set: each worker main process's id, scored by its last heartbeat
# (server time); the watchdog unlists the dead ones and looks at every job.
WORKERS = f"{PREFIX}:workers"
# String, expiring: the worker whose watchdog has the turn to look at silent jobs.
WATCHDOG_TURN = f"{PREFIX}:watchdog:turn"
# Sorted set: "job_id:chunk" of a chunk whose next pass is further off than a
# Celery countdown may be (a send window opening hours from now), scored by
# when it is due (epoch s); the workers' releaser enqueues it then.
PARKED = f"{PREFIX}:parked"
OPTOUT = f"{PREFIX}:optout"  # set: E.164 numbers never to send to
ACCOUNTS = f"{PREFIX}:accounts"  # hash: account name -> "kind\tsender", published by workers
ROUTES = f"{PREFIX}:routes"  # hash: route name -> Route.to_json(), published by workers
# Hash: account name -> its limits as the workers read them (JSON), published
# by workers for the console (``GET /v1/accounts``).
LIMITS = f"{PREFIX}:limits"
# A job's timeline keeps at most this many buckets: at 121 fields or fewer a
# hash stays a listpack (hash-max-listpack-entries is 128).
TIMELINE_BUCKETS = 120


def parked(job_id: str, chunk_no: int) -> str:
    """A parked chunk's member of ``PARKED``."""
    return f"{job_id}:{chunk_no}"


def job(job_id: str) -> str:
    """Hash: the job's settings, state and counters."""
    return f"{PREFIX}:job:{job_id}"


def block(job_id: str, block_no: int) -> str:
    """String: JSON array of the block's messages (compact tuples)."""
    return f"{PREFIX}:job:{job_id}:m:{block_no}"


def upload_block(upload: str, block_no: int) -> str:
    """String, expiring: a block of a job still being submitted (``upload`` is
    a random token). Renamed to ``block`` when the job is committed, so a
    refused or crashed submission leaves only keys that expire."""
    return f"{PREFIX}:upload:{upload}:m:{block_no}"


def outcomes(job_id: str, block_no: int) -> str:
    """Hash: message index -> compact outcome, for the block's messages."""
    return f"{PREFIX}:job:{job_id}:o:{block_no}"


def requests(job_id: str, chunk_no: int) -> str:
    """Hash: request number -> provider request state, for the chunk."""
    return f"{PREFIX}:job:{job_id}:r:{chunk_no}"


def timeline(job_id: str) -> str:
    """Hash: recipients accepted per time bucket (commit_outcomes.lua): ``w``
    (the bucket's width in seconds, doubled when the buckets pass
    TIMELINE_BUCKETS), and each bucket's start (epoch s) -> count."""
    return f"{PREFIX}:job:{job_id}:tl"


def lease(job_id: str, chunk_no: int) -> str:
    """String: the worker currently sending the chunk (SET NX with expiry)."""
    return f"{PREFIX}:job:{job_id}:lease:{chunk_no}"


def done(job_id: str) -> str:
    """Bitmap: bit ``chunk_no`` is 1 once the chunk has nothing left to send
    (its last pass ended). Deleted when a retry has reset the job's outcomes
    (``producer.control.restart_run``)."""
    return f"{PREFIX}:job:{job_id}:done"


def account_block(account: str) -> str:
    """String: why the account's sending is stopped (bad credentials)."""
    return f"{PREFIX}:blocked:{account}"


def rate(account: str) -> str:
    """Hash: the account's rate limiter, shared by every worker
    (worker/pipeline/rate_limit.py), with its meter: parts taken and 429s
    answered in the last seconds (rate_acquire.lua, rate_throttled.lua)."""
    return f"{PREFIX}:rate:{account}"


def circuit(account: str) -> str:
    """Hash: the account's circuit breaker, shared by every worker
    (worker/pipeline/circuit.py): failures, open_until, probe_until."""
    return f"{PREFIX}:circuit:{account}"


def daily_parts(account: str) -> str:
    """Hash, expiring: the SMS parts taken through the account on one UTC day
    (worker/pipeline/daily_cap.py): day (days since the epoch), parts."""
    return f"{PREFIX}:daily:{account}"


def dedupe(e164: str, content: str) -> str:
    """String, expiring with its window: who claimed sending ``content`` (a
    hash of the text, or template and params) to the number
    (worker/pipeline/dedupe.py): "job_id index claimed_at"."""
    return f"{PREFIX}:dd:{e164}:{content}"
