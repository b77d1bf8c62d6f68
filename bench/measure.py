"""Run one scenario on a started stack and measure it.

The clock starts before the submission call and stops when every recipient
is final (the time the last one was recorded, from Redis, not when the poll
noticed). Meanwhile: worker RSS and CPU (per process group, from /proc),
Redis ``used_memory``, progress lines. Afterwards: the sandbox's per-second
counts, for a steady-state rate that leaves out the ramp-up and the tail.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench import procfs
from bench.profile import Profile, Profiler
from bench.scenarios import Scenario
from bench.stack import Stack

POLL_S = 0.25
SAMPLE_S = 0.5
STALL_S = 180.0  # no recipient became final for this long: give up on the scenario
MB = 1024 * 1024


class Target(Protocol):
    """What a scenario submits and how its progress is read."""

    def submit(self) -> None: ...

    def progress(self) -> tuple[int, bool]:
        """Recipients final so far, and whether the whole job has ended."""
        ...

    def finished_wall_s(self) -> float | None:
        """When the last recipient became final (epoch seconds), if known."""
        ...

    def statuses(self) -> dict[str, int]: ...


@dataclass
class Result:
    scenario: Scenario
    submit_s: float = 0.0
    total_s: float = 0.0  # submission start -> every recipient final
    statuses: dict[str, int] = field(default_factory=dict)
    steady_per_s: float | None = None  # median of the sandbox's full seconds
    max_second: int | None = None  # most recipients the sandbox saw in one second
    sandbox: dict[str, Any] = field(default_factory=dict)
    worker_processes: int = 0
    worker_peak_kb: int = 0  # sum of each worker process's VmHWM
    worker_rss_idle_kb: int = 0  # before submission
    worker_rss_10_kb: int = 0  # when 10 % of the recipients were final
    worker_rss_end_kb: int = 0
    producer_job_kb: int = 0  # RSS the built job took before submission
    producer_peak_kb: int = 0  # VmHWM during the submit call
    producer_added_kb: int = 0  # that peak minus RSS just before the call
    redis_before: int = 0
    redis_after_submit: int = 0
    redis_peak: int = 0
    redis_after: int = 0
    cpu_s: dict[str, float] = field(default_factory=dict)
    producer_submit_cpu_s: float = 0.0
    profile: Profile | None = None  # --profile: the workers' py-spy summary
    otp_ms: list[float] = field(default_factory=list)  # otp-behind-campaign: each code's time
    problem: str | None = None

    @property
    def recipients(self) -> int:
        return self.scenario.recipients

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def e2e_per_s(self) -> float:
        return self.recipients / self.total_s if self.total_s > 0 else 0.0

    @property
    def send_per_s(self) -> float:
        span = self.total_s - self.submit_s
        return self.recipients / span if span > 0 else 0.0

    @property
    def worker_cpu_ms_per_1000(self) -> float:
        """Worker CPU (every process) per 1000 recipients, in ms."""
        return 1e6 * self.cpu_s.get("workers", 0) / self.recipients

    def redis_bytes_per_recipient(self, which: str) -> float:
        value = {
            "submitted": self.redis_after_submit,
            "peak": self.redis_peak,
            "after": self.redis_after,
        }[which]
        return (value - self.redis_before) / self.recipients


def _sandbox_json(stack: Stack, path: str) -> Any:
    with urllib.request.urlopen(stack.sandbox_url + path, timeout=60) as answer:
        return json.loads(answer.read())


def _used_memory(stack: Stack) -> int:
    client = stack.redis()
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


class _Cpu:
    """CPU seconds of every process of the scenario, by role."""

    def __init__(self, stack: Stack, watches: list[procfs.GroupWatch]) -> None:
        self.stack = stack
        self.watches = watches

    def snapshot(self) -> dict[str, float]:
        for watch in self.watches:
            watch.sample()
        sandbox = self.stack.sandbox
        return {
            "workers": sum(w.cpu_total_s for w in self.watches),
            "workers_main": sum(w.leader_cpu_s for w in self.watches),
            "sandbox": (procfs.cpu_s(sandbox.pid) or 0.0) if sandbox else 0.0,
            "valkey": procfs.cpu_s(self.stack.valkey_pid) or 0.0,
            "producer": procfs.own_cpu_s(),
        }


def steady_rate(per_second: dict[str, int]) -> tuple[float | None, int | None]:
    """Median and maximum of the full seconds (first and last left out)."""
    counts = [per_second[k] for k in sorted(per_second, key=int)]
    if not counts:
        return None, None
    inner = counts[1:-1]
    if len(inner) < 2:
        return None, max(counts)
    return float(statistics.median(inner)), max(inner)


def measure(
    stack: Stack,
    scenario: Scenario,
    make_target: Callable[[], Target],
    say: Callable[[str], None],
    sandbox_kind: str,
    profiler: Profiler | None = None,
) -> Result:
    """Build the target's job, submit it, wait until it ends; the figures
    (with ``profiler``, the workers are sampled from submission to the end)."""
    run = _Run(stack, scenario, say)
    target = run.build(make_target)
    if profiler is not None:
        profiler.start([worker.pid for worker in stack.workers])
    run.submit(target)
    noticed_s = run.await_end(target)
    if profiler is not None:
        run.result.profile = profiler.stop()
    run.finish(target, noticed_s, sandbox_kind)
    return run.result


class _Run:
    """One scenario's measurement, step by step: build, submit, await, finish."""

    def __init__(self, stack: Stack, scenario: Scenario, say: Callable[[str], None]) -> None:
        self.stack, self.scenario, self.say = stack, scenario, say
        self.result = Result(scenario)
        self.watches = [procfs.GroupWatch(worker.pid) for worker in stack.workers]
        self.cpu = _Cpu(stack, self.watches)

    def _workers_kb(self) -> int:
        return sum(w.rss_kb for w in self.watches)

    def build(self, make_target: Callable[[], Target]) -> Target:
        """The target's job, built before the clock starts: its memory is the
        application's, measured apart."""
        result = self.result
        gc.collect()
        rss_empty = procfs.own_rss_kb()
        target = make_target()
        gc.collect()
        self.rss_before = procfs.own_rss_kb()
        result.producer_job_kb = max(self.rss_before - rss_empty, 0)
        self.cpu_before = self.cpu.snapshot()
        result.worker_rss_idle_kb = self._workers_kb()
        result.redis_before = _used_memory(self.stack)
        self.peak_reset = procfs.reset_own_peak_rss()
        return target

    def submit(self, target: Target) -> None:
        result, scenario = self.result, self.scenario
        self.wall_start = time.time()
        self.start = time.monotonic()
        own_cpu = procfs.own_cpu_s()
        target.submit()
        result.submit_s = time.monotonic() - self.start
        result.producer_submit_cpu_s = procfs.own_cpu_s() - own_cpu
        hwm = procfs.own_rss_kb("VmHWM")
        result.producer_peak_kb = hwm if self.peak_reset else 0
        result.producer_added_kb = max(hwm - self.rss_before, 0) if self.peak_reset else 0
        self.say(
            f"[{scenario.name}] submitted {scenario.recipients:,} recipients in "
            f"{result.submit_s:.2f} s (producer peak {result.producer_peak_kb / 1024:,.0f} MB)"
        )
        result.redis_after_submit = _used_memory(self.stack)
        result.redis_peak = result.redis_after_submit

    def _sample(self, done: int) -> int:
        """Memory now (workers and Redis); Redis's used memory returned."""
        result = self.result
        for watch in self.watches:
            watch.sample()
        redis_now = _used_memory(self.stack)
        result.redis_peak = max(result.redis_peak, redis_now)
        if not result.worker_rss_10_kb and done >= self.scenario.recipients // 10:
            result.worker_rss_10_kb = self._workers_kb()
        return redis_now

    def _show(self, now: float, done: int, since: tuple[float, int], redis_now: int) -> None:
        scenario, (last_shown, shown_done) = self.scenario, since
        interval_rate = (done - shown_done) / max(now - last_shown, 1e-9)
        self.say(
            f"[{scenario.name}] {now - self.start:7.1f} s {done:>10,}/{scenario.recipients:,}"
            f" {100 * done / scenario.recipients:5.1f} %  {interval_rate:>9,.0f}/s now"
            f"  {done / (now - self.start):>9,.0f}/s overall"
            f"  workers {self._workers_kb() / 1024:,.0f} MB"
            f"  redis {redis_now / MB:,.0f} MB"
        )

    def await_end(self, target: Target) -> float:
        """Poll until the job ends or stalls, showing progress; the seconds
        from submission until the end was noticed."""
        scenario = self.scenario
        last_done, last_change = 0, time.monotonic()
        shown = (self.start, 0)
        next_sample = 0.0
        redis_now = self.result.redis_after_submit
        every_s = 3.0 if scenario.recipients <= 200_000 else 5.0
        while True:
            now = time.monotonic()
            self.stack.check_alive()
            done, ended = target.progress()
            if now >= next_sample:
                redis_now = self._sample(done)
                next_sample = now + SAMPLE_S
            if done != last_done:
                last_done, last_change = done, now
            if ended or now - shown[0] >= every_s:
                self._show(now, done, shown, redis_now)
                shown = (now, done)
            if ended:
                break
            if now - last_change > STALL_S:
                self.result.problem = (
                    f"stalled: {done:,} of {scenario.recipients:,} final"
                    f" after {now - self.start:.0f} s"
                )
                break
            time.sleep(POLL_S)
        return time.monotonic() - self.start

    def finish(self, target: Target, noticed_s: float, sandbox_kind: str) -> None:
        """The figures after the end: CPU, memory, outcomes, the sandbox's rate."""
        result, stack, watches = self.result, self.stack, self.watches
        finished = target.finished_wall_s()
        result.total_s = (
            finished - self.wall_start if finished and finished > self.wall_start else noticed_s
        )
        cpu_after = self.cpu.snapshot()
        result.cpu_s = {role: cpu_after[role] - self.cpu_before[role] for role in cpu_after}
        result.worker_rss_end_kb = self._workers_kb()
        result.worker_rss_10_kb = result.worker_rss_10_kb or result.worker_rss_end_kb
        result.worker_peak_kb = sum(w.peak_total_kb for w in watches)
        result.worker_processes = sum(w.processes for w in watches)
        result.redis_after = _used_memory(stack)
        result.redis_peak = max(result.redis_peak, result.redis_after)
        result.statuses = target.statuses()
        result.sandbox = _sandbox_json(stack, "/_sandbox/stats")
        rate = _sandbox_json(stack, f"/_sandbox/rate?kind={sandbox_kind}")
        result.steady_per_s, result.max_second = steady_rate(rate["items_per_second"])
        final = sum(n for status, n in result.statuses.items() if status != "pending")
        if result.problem is None and final != self.scenario.recipients:
            result.problem = f"only {final:,} of {self.scenario.recipients:,} recipients final"
