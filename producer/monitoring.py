"""What the console watches, read from Redis: a job's timeline (recipients
accepted per second), its errors grouped by code, and each account's live
figures (parts/s, 429s, circuit, parts today, limits).

The workers write all of it where they already write: the commit script
counts accepted recipients in the job's timeline (``keys.timeline``), the
rate limiter's scripts meter parts taken and 429s answered in the account's
limiter hash (``keys.rate``), and each worker publishes its accounts' limits
(``keys.LIMITS``) when it starts. Nothing here writes.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, cast

import redis

from producer.core import keys
from producer.core.scripts import script
from producer.core.states import FINAL_CODES
from producer.core.store import STATUS_NAMES, block_count

# The window of "parts/s now" (the limiter's meter rings 8 s of parts) and
# that of "429s in the last minute" (64 s of 429s).
PARTS_WINDOW_S = 5
THROTTLED_WINDOW_S = 60
ERROR_BLOCKS_PER_CALL = 16  # outcome blocks one error_counts call reads (16,000 outcomes)
MAX_ERROR_GROUPS = 100  # the most error codes GET /v1/jobs/{id}/errors lists
# While a job's errors change, ErrorCounts counts them again at most this
# often per block of outcomes: every 10 s for a million recipients.
RECOUNT_S_PER_BLOCK = 0.01


def job_timeline(client: redis.Redis, job_id: str) -> list[dict[str, Any]] | None:
    """The job's recipients accepted per second, oldest first: one point a
    bucket that counted any, ``{"t": bucket start (epoch s), "n": recipients
    per second, "s": bucket width (s)}``; None if there is no such job."""
    pipe = client.pipeline(transaction=False)
    pipe.exists(keys.job(job_id))
    pipe.hgetall(keys.timeline(job_id))
    exists, fields = pipe.execute()
    if not exists:
        return None
    buckets = cast(dict[bytes, bytes], fields)
    width = int(buckets.pop(b"w", b"1"))
    return [
        {"t": start, "n": _per_second(int(buckets[raw]), width), "s": width}
        for start, raw in sorted((int(raw), raw) for raw in buckets)
    ]


def _per_second(count: int, width_s: int) -> float | int:
    return count if width_s == 1 else round(count / width_s, 3)


def job_errors(client: redis.Redis, job_id: str) -> list[dict[str, Any]] | None:
    """The job's errors grouped by code, most frequent first (at most
    MAX_ERROR_GROUPS): ``{"code", "error" (one of their texts), "count",
    "statuses": {status: count}}``; None if there is no such job. Counted in
    Redis a few blocks per call (error_counts.lua): only groups are sent."""
    raw_total = client.hget(keys.job(job_id), "total")
    if raw_total is None:
        return None
    blocks = block_count(int(cast(bytes, raw_total)))
    groups: dict[str, dict[str, Any]] = {}
    for first in range(0, blocks, ERROR_BLOCKS_PER_CALL):
        numbers = range(first, min(first + ERROR_BLOCKS_PER_CALL, blocks))
        reply = cast(
            list[Any],
            script("error_counts")(
                keys=[keys.outcomes(job_id, n) for n in numbers], args=[], client=client
            ),
        )
        for at in range(0, len(reply), 4):
            code, status, count, text = (_text(item) for item in reply[at : at + 4])
            group = groups.setdefault(
                code, {"code": code or None, "error": text or None, "count": 0, "statuses": {}}
            )
            name = STATUS_NAMES[status]
            group["count"] += int(count)
            group["statuses"][name] = group["statuses"].get(name, 0) + int(count)
    ranked = sorted(groups.values(), key=lambda group: (-group["count"], group["code"] or ""))
    return ranked[:MAX_ERROR_GROUPS]


class ErrorCounts:
    """``job_errors``, remembered per job (the last ``size`` jobs asked) so
    that a console polling a big job's errors every second does not make
    Redis read all its outcomes every second: counted again only once the
    job's counters of final outcomes other than accepted (or its run) have
    changed, and then at most every RECOUNT_S_PER_BLOCK × its blocks."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, tuple[tuple[Any, ...], float, list[dict[str, Any]]]] = (
            OrderedDict()
        )

    def get(self, client: redis.Redis, job_id: str) -> list[dict[str, Any]] | None:
        fields = ["total", "run", *(f"n:{code}" for code in FINAL_CODES if code != "a")]
        signature = tuple(cast(list[Any], client.hmget(keys.job(job_id), fields)))
        if signature[0] is None:
            return None
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(job_id)
        if seen is not None:
            recount_s = RECOUNT_S_PER_BLOCK * block_count(int(signature[0]))
            if seen[0] == signature or now - seen[1] < recount_s:
                return seen[2]
        groups = job_errors(client, job_id)
        if groups is None:
            return None
        with self._lock:
            self._seen[job_id] = (signature, now, groups)
            self._seen.move_to_end(job_id)
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)
        return groups


def _text(raw: bytes | str | int) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _metered(fields: Mapping[bytes, bytes], prefix: bytes, since: int) -> int:
    """The sum of a meter ring's counts (meter_add.lua) from second ``since`` on."""
    total = 0
    for field, value in fields.items():
        if field.startswith(prefix) and field[len(prefix) :].isdigit():
            second, _, count = value.partition(b":")
            if int(second) >= since:
                total += int(count)
    return total


def account_health(client: redis.Redis, names: Iterable[str]) -> list[dict[str, Any]]:
    """Each account as the workers see it now: its circuit (shared by every
    worker), its consecutive failed requests, its parts sent today (UTC;
    counted only for accounts with ``daily_max_parts``), whether it is
    stopped (bad credentials), its parts/s over the last seconds, its 429s in
    the last minute, and its limits as the workers published them (None before a worker started)."""
    names = sorted(names)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hmget(keys.circuit(name), "failures", "open_until")
        pipe.hmget(keys.daily_parts(name), "day", "parts")
        pipe.get(keys.account_block(name))
        pipe.hgetall(keys.rate(name))
        pipe.hget(keys.LIMITS, name)
    pipe.time()
    *replies, (seconds, micros) = pipe.execute()
    now = int(seconds) + int(micros) / 1e6
    today = int(seconds) // 86400
    health = []
    for n, name in enumerate(names):
        (failures, open_until), (day, parts), blocked, rate, limits = replies[5 * n : 5 * n + 5]
        health.append(
            {
                "account": name,
                "circuit": "closed" if open_until is None else "open",
                "failures": int(failures or 0),
                "parts_today": int(parts or 0) if day and int(day) == today else 0,
                "stopped": blocked.decode() if blocked else None,
                **_rates(rate, now),
                "limits": json.loads(limits) if limits else None,
            }
        )
    return health


def _rates(limiter: Mapping[bytes, bytes], now: float) -> dict[str, Any]:
    """parts/s now (the last PARTS_WINDOW_S whole seconds and this one's
    part) and 429s in the last minute."""
    second = int(now)
    parts = _metered(limiter, b"p", second - PARTS_WINDOW_S)
    return {
        "parts_per_second": round(parts / (now - second + PARTS_WINDOW_S), 1),
        "throttled_last_minute": _metered(limiter, b"q", second - THROTTLED_WINDOW_S + 1),
    }
