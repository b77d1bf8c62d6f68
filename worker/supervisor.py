"""``smsbulk worker``'s default: one Celery worker process a core, each on the
threads pool, under this small supervisor.

Why: a prefork pool process sends one chunk at a time, so at a real
provider's latency throughput is bought with processes (75 MB each); a
threads-pool process keeps 32 chunks in flight on its one event loop, but
uses one core at most. Measured on 2 cores, 200,000 sendbulk recipients:
prefork with 4 processes 12,700/s at 200 ms and 6,700/s at 500 ms (393 MB);
one threads process 20,200/s and 19,700/s (122 MB); two 28,500/s and
23,900/s (249 MB). So the default is as many threads-pool workers as cores.

Each child is a whole ``smsbulk worker --pool=threads`` with a hostname of
its own (``NAME-1@host``, ...), so crash safety is each child's: a child
that dies is restarted, its chunks recovered as any dead worker's (leases,
request states, the watchdog). The supervisor forwards SIGTERM, SIGINT (as
SIGTERM) and SIGQUIT to the children and exits once they have; if it is
killed, the children get SIGTERM from the kernel (PR_SET_PDEATHSIG) and
shut down warm.
It serves ``/metrics`` for all of them (the children write their figures
into its multiprocess directory and serve none).

Hand-written: Celery's ``multi`` daemonizes and does not watch its
children; a supervisor this small needs no library.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from worker.ops.metrics import PORT_ENV

THREADS_PER_PROCESS = 32
RESTART_DELAY_S = 1.0
POLL_S = 0.5
# A child that dies this soon after its start, this many times in a row, is
# broken (a bad broker URL, say): stop rather than restart it for ever.
QUICK_DEATH_S = 10.0
QUICK_DEATHS = 3
_PR_SET_PDEATHSIG = 1
SUPERVISOR_ENV = "SMSBULK_SUPERVISOR_PID"
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def usable_cores() -> int:
    """The cores this process may run on (a container's cpuset, not the host's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class PoolOptions:
    """What ``smsbulk worker``'s arguments say about its pool: Celery's
    ``--pool``, ``--concurrency`` and ``--hostname`` (in every form Celery
    takes) and our ``--processes``; ``others`` go to Celery as they are."""

    pool: str | None
    concurrency: int | None
    hostname: str | None
    processes: int | None
    others: tuple[str, ...]

    @classmethod
    def parse(cls, args: Sequence[str]) -> PoolOptions:
        parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        parser.add_argument("-P", "--pool")
        parser.add_argument("-c", "--concurrency", type=int)
        parser.add_argument("-n", "--hostname")
        parser.add_argument("--processes", type=int)
        known, others = parser.parse_known_args(list(args))
        return cls(known.pool, known.concurrency, known.hostname, known.processes, tuple(others))

    @property
    def names_pool(self) -> bool:
        """The arguments choose the pool or the process count themselves."""
        return self.pool is not None or self.processes is not None

    @property
    def process_count(self) -> int:
        """Worker processes of the default (threads-pool) worker: one a core."""
        return self.processes or usable_cores()

    @property
    def supervised(self) -> bool:
        return self.pool is None and self.process_count > 1

    def celery_args(self, hostname: str | None = None) -> list[str]:
        """One Celery worker's arguments: the pool named, else the threads
        pool of THREADS_PER_PROCESS threads (or ``--concurrency``)."""
        concurrency = self.concurrency or (THREADS_PER_PROCESS if self.pool is None else None)
        name = hostname or self.hostname
        return [
            f"--pool={self.pool or 'threads'}",
            *([f"--concurrency={concurrency}"] if concurrency else []),
            *self.others,
            *([f"--hostname={name}"] if name else []),
        ]


def child_name(hostname: str | None, n: int) -> str:
    """``bench1@%h`` → ``bench1-2@%h``; no hostname → ``smsbulk-2@%h``."""
    name, at, host = (hostname or "smsbulk@%h").partition("@")
    return f"{name}-{n}{at}{host or ''}" if at else f"{name}-{n}"


def die_with_supervisor() -> None:
    """In a child (``SUPERVISOR_ENV`` set): SIGTERM when the supervisor dies;
    exit now if it already has."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor:
        return
    # Not Linux: no prctl, and the children outlive a killed supervisor.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(supervisor):
        raise SystemExit("smsbulk worker: its supervisor is gone")


@dataclass
class _Child:
    argv: list[str]
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0

    def start(self) -> None:
        self.popen = subprocess.Popen(self.argv, env=self.env)
        self.started = time.monotonic()

    def exit_code(self) -> int | None:
        return None if self.popen is None else self.popen.poll()


@dataclass
class Supervisor:
    children: list[_Child]
    stopping: bool = False
    gave_up: bool = False  # a child kept dying at start: the others were stopped

    def run(self) -> int:
        for sig in _FORWARDED:
            signal.signal(sig, self._forward)
        for child in self.children:
            child.start()
        live = list(self.children)
        while live:
            time.sleep(POLL_S)  # a signal runs _forward at once, then the sleep goes on
            for child in list(live):
                code = child.exit_code()
                if code is not None and not self._restarted(child, code):
                    live.remove(child)
        if self.gave_up:
            return 1
        # A child's error on its way out is the supervisor's (a signal's death is a stop).
        return max((max(child.exit_code() or 0, 0) for child in self.children), default=0)

    def _forward(self, signum: int, _frame: object) -> None:
        # SIGINT goes on as SIGTERM: after a Ctrl-C the children have had the
        # terminal's SIGINT already, and a second SIGINT would make Celery's
        # warm shutdown a cold one. SIGQUIT (cold) goes on as it is.
        self.stopping = True
        forwarded = signal.SIGQUIT if signum == signal.SIGQUIT else signal.SIGTERM
        for child in self.children:
            if child.popen is not None and child.exit_code() is None:
                child.popen.send_signal(forwarded)

    def _restarted(self, child: _Child, code: int) -> bool:
        """Start a child that exited ``code`` again, unless it was stopped
        (by a signal forwarded, or a remote shutdown: code 0) or is broken."""
        if self.stopping or code == 0:
            return False
        quick = time.monotonic() - child.started < QUICK_DEATH_S
        child.quick_deaths = child.quick_deaths + 1 if quick else 0
        if child.quick_deaths >= QUICK_DEATHS:
            print(
                f"smsbulk worker: {child.argv[-1]} exited {code} {QUICK_DEATHS} times "
                f"within {QUICK_DEATH_S:.0f} s of starting; stopping the others",
                file=sys.stderr,
            )
            self.gave_up = True
            self._forward(signal.SIGTERM, None)
            return False
        print(f"smsbulk worker: a worker process exited {code}; restarting it", file=sys.stderr)
        time.sleep(RESTART_DELAY_S)
        if self.stopping:
            return False
        child.start()
        return True


def supervise(options: PoolOptions) -> int:
    """Run ``options.process_count`` threads-pool workers, each given
    ``options``' Celery arguments, until they stop."""
    from worker.ops.metrics_server import MetricsPortBusy, start_metrics_server

    try:
        server = start_metrics_server()  # sets the multiprocess directory the children inherit
    except MetricsPortBusy as error:
        # As a single Celery worker does: the workers run, without /metrics.
        print(f"smsbulk worker: {error}; the workers run without /metrics", file=sys.stderr)
        server = None
    env = {**os.environ, PORT_ENV: "0", SUPERVISOR_ENV: str(os.getpid())}
    children = [
        _Child(
            [
                sys.executable,
                "-m",
                "worker.cli",
                "worker",
                *options.celery_args(hostname=child_name(options.hostname, n)),
            ],
            env,
        )
        for n in range(1, options.process_count + 1)
    ]
    try:
        return Supervisor(children).run()
    finally:
        if server is not None:
            server.stop()
