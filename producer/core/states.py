"""The job's state machine, written once: its states, the moves between them,
the recipient statuses that are final, and the states in which a job sends
nothing more.

The Redis scripts read the same table: ``lua_prelude()`` is put before every
script (producer/core/scripts.py), so a script says ``ENDED[state]`` or
``FINAL_CODES`` instead of spelling the states out again.
"""

from __future__ import annotations

import json
from typing import get_args

from producer.core.store import STATUS_CODES
from producer.job import FINAL_STATUSES, JobState

JOB_STATES: tuple[JobState, ...] = get_args(JobState)

# Every move of a job from one state to another (None: the job does not
# exist yet), and the scripts (producer/core/lua/) that make it: commit_job;
# mark_queued (the releaser); mark_running (the plan); pause_job, cost_reserve
# (a job's max_cost reached) and resume_job; cancel_job; finish_if_final (the
# last commit); reopen_job (retry).
TRANSITIONS: dict[JobState | None, frozenset[JobState]] = {
    None: frozenset({"scheduled", "queued"}),  # submission
    "scheduled": frozenset({"queued", "running", "paused", "cancelled"}),  # release, plan
    "queued": frozenset({"running", "paused", "cancelled", "completed"}),  # plan, last commit
    "running": frozenset({"paused", "cancelled", "completed"}),
    "paused": frozenset({"scheduled", "queued", "cancelled"}),  # resume: where it was, or queued
    "completed": frozenset({"queued"}),  # retry
    "cancelled": frozenset({"queued"}),  # retry
}

# No request starts in these; only a retry moves a job out of one.
ENDED_STATES: tuple[JobState, ...] = ("completed", "cancelled")
# A provider request may start only in these.
SENDING_STATES: tuple[JobState, ...] = ("queued", "running")
# A commit in these may finish the job (a cancelled job stays listed as
# active until its last recipient is final).
FINISHING_STATES: tuple[JobState, ...] = ("queued", "running", "cancelled")

FINAL_CODES: tuple[str, ...] = tuple(STATUS_CODES[name] for name in FINAL_STATUSES)


def _set(names: tuple[str, ...]) -> str:
    return "{" + ", ".join(f"[{json.dumps(name)}] = true" for name in names) + "}"


def lua_prelude() -> str:
    """The table as Lua locals, for the top of every script."""
    return "\n".join(
        [
            "-- From producer/core/states.py (the one state table).",
            f"local JOB_STATES = {_set(JOB_STATES)}",
            f"local ENDED = {_set(ENDED_STATES)}",
            f"local SENDING = {_set(SENDING_STATES)}",
            f"local FINISHING = {_set(FINISHING_STATES)}",
            "local FINAL_CODES = {" + ", ".join(json.dumps(c) for c in FINAL_CODES) + "}",
            "",
        ]
    )
