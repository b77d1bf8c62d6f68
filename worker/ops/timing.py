"""Every time limit derived from ``recovery_s``, in one place (pure).

Measured (docs/ARCHITECTURE.md, "Measured facts"): with acks late, kombu
hands a delivered task to another worker once it is older than the
visibility timeout, counted from delivery, and the sweep runs every 10 s.
So the visibility timeout is ``recovery_s`` minus that sweep, and the hard
task time limit, any countdown and a chunk pass's budget stay well under it:
a task is never redelivered while it still runs.
"""

from __future__ import annotations

from dataclasses import dataclass

RESTORE_SWEEP_S = 10
# A worker main process beats this often, and each watchdog looks for dead
# workers as often; no beat for WORKER_DEAD_AFTER_S means dead. A task that
# a dead worker lost so gets another within about 7 s of the kill, inside
# the smallest recovery_s (10 s); a live worker missing 5 beats in a row
# costs one look at every job, nothing else.
HEARTBEAT_S = 1.0
WORKER_DEAD_AFTER_S = 5.0


@dataclass(frozen=True, slots=True)
class Timing:
    visibility_timeout_s: int
    task_time_limit_s: int
    max_countdown_s: float  # longest Celery countdown (retries, deferrals)
    pass_budget_s: float  # no new provider request starts after this much of a pass
    request_timeout_s: float  # one provider request, connect to last byte
    lease_ttl_s: int  # a chunk's lease outlives the task that holds it

    @classmethod
    def from_recovery(cls, recovery_s: float) -> Timing:
        visibility = max(int(recovery_s) - RESTORE_SWEEP_S, 10)
        limit = max(visibility // 3, 5)
        return cls(
            visibility_timeout_s=visibility,
            task_time_limit_s=limit,
            max_countdown_s=float(max(visibility // 3, 1)),
            pass_budget_s=limit / 3,
            request_timeout_s=min(60.0, limit / 3),
            lease_ttl_s=limit + 5,
        )


DAY_S = 86400
RETENTION_SWEEP_MAX_S = 60.0
RETENTION_SWEEP_MIN_S = 1.0


def retention_sweep_s(retention_s: float) -> float:
    """How often a worker looks for jobs past ``retention_days``: a tenth of
    the retention, between one second and a minute, so a job is removed at
    most about a tenth late (and at most a minute late at the default)."""
    return min(RETENTION_SWEEP_MAX_S, max(RETENTION_SWEEP_MIN_S, retention_s / 10))
