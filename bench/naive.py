"""The naive baseline, side by side with smsbulk: the same Valkey set-up,
the same sandbox, the same number of worker processes.

Its task is in ``bench/naive_app.py``. Submission is what a tutorial does:
one ``send_task`` per recipient, in a loop. Progress is the length of the
outcomes hash; each outcome carries the time it was written, so the end is
the last outcome's time, not when the poll noticed.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections import Counter
from typing import cast

from celery import Celery

from bench import naive_app
from bench.scenarios import TEXT, Scenario, number
from bench.stack import Stack
from worker.dev.launcher import Process
from worker.dev.sandbox import app as sandbox


def start_worker(stack: Stack, concurrency: int) -> Process:
    """``celery -A bench.naive_app worker -c N -Q bench.naive --loglevel=INFO``."""
    env = {
        **stack.env,
        "BENCH_NAIVE_REDIS_URL": stack.redis_url,
        "BENCH_NAIVE_SANDBOX_URL": stack.sandbox_url,
        "BENCH_NAIVE_API_KEY": sandbox.SANDBOX_GOSMS_KEY,
    }
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.naive_app",
        "worker",
        f"--concurrency={concurrency}",
        f"--queues={naive_app.QUEUE}",
        "--hostname=naive@%h",
        "--loglevel=INFO",
    ]
    return Process("naive", argv, env, stack.work / "naive-worker.log")


class NaiveTarget:
    def __init__(self, stack: Stack, scenario: Scenario) -> None:
        self.key = f"bench:naive:{uuid.uuid4().hex[:8]}"
        self.total = scenario.recipients
        self.celery = Celery("naive-client", broker=stack.redis_url, set_as_current=False)
        self.redis = stack.redis()
        self._numbers: list[str] | None = [number(n) for n in range(self.total)]

    def submit(self) -> None:
        assert self._numbers is not None
        for index, to in enumerate(self._numbers):
            self.celery.send_task(
                naive_app.TASK, args=[self.key, index, to, TEXT], queue=naive_app.QUEUE
            )
        self._numbers = None

    def progress(self) -> tuple[int, bool]:
        done = int(self.redis.hlen(self.key))
        return done, done >= self.total

    def _outcomes(self) -> list[dict[str, object]]:
        return [json.loads(raw) for raw in cast(list[bytes], self.redis.hvals(self.key))]

    def finished_wall_s(self) -> float | None:
        times = [float(cast(float, o["t"])) for o in self._outcomes()]
        return max(times) if times else None

    def statuses(self) -> dict[str, int]:
        counts = Counter(str(o["status"]) for o in self._outcomes())
        return {"pending": self.total - sum(counts.values()), **counts}

    def close(self) -> None:
        self.redis.close()
        self.celery.close()
