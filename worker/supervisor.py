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

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from worker.ops.metrics import PORT_ENV

THREADS_PER_PROCESS = 32
RESTART_DELAY_S = 1.0
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
    done: bool = False  # exited by itself with 0 (a remote shutdown): not restarted

    def start(self) -> None:
        self.popen = subprocess.Popen(self.argv, env=self.env)
        self.started = time.monotonic()


@dataclass
class Supervisor:
    children: list[_Child]
    stopping: bool = False
    codes: list[int] = field(default_factory=list)

    def run(self) -> int:
        for sig in _FORWARDED:
            signal.signal(sig, self._forward)
        for child in self.children:
            child.start()
        while any(c.popen is not None and not c.done for c in self.children):
            self._reap_once()
        return max(self.codes, default=0)

    def _forward(self, signum: int, _frame: object) -> None:
        # SIGINT goes on as SIGTERM: after a Ctrl-C the children have had the
        # terminal's SIGINT already, and a second SIGINT would make Celery's
        # warm shutdown a cold one. SIGQUIT (cold) goes on as it is.
        self.stopping = True
        forwarded = signal.SIGQUIT if signum == signal.SIGQUIT else signal.SIGTERM
        for child in self.children:
            if child.popen is not None and child.popen.poll() is None:
                child.popen.send_signal(forwarded)

    def _reap_once(self) -> None:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            for child in self.children:
                child.done = True
            return
        except InterruptedError:
            return
        found = [c for c in self.children if c.popen is not None and c.popen.pid == pid]
        if not found:
            return
        child = found[0]
        code = os.waitstatus_to_exitcode(status)
        child.popen.returncode = code  # type: ignore[union-attr]
        if self.stopping or code == 0:
            child.done = True
            self.codes.append(max(code, 0))  # killed by the signal forwarded: a stop
            return
        quick = time.monotonic() - child.started < QUICK_DEATH_S
        child.quick_deaths = child.quick_deaths + 1 if quick else 0
        if child.quick_deaths >= QUICK_DEATHS:
            print(
                f"smsbulk worker: {child.argv[-1]} exited {code} {QUICK_DEATHS} times "
                f"within {QUICK_DEATH_S:.0f} s of starting; stopping the others",
                file=sys.stderr,
            )
            self.codes.append(1)
            child.done = True
            self._forward(signal.SIGTERM, None)
            return
        print(f"smsbulk worker: a worker process exited {code}; restarting it", file=sys.stderr)
        time.sleep(RESTART_DELAY_S)
        if not self.stopping:
            child.start()


def supervise(
    celery_args: Sequence[str], processes: int, threads: int, hostname: str | None
) -> int:
    """Run ``processes`` threads-pool workers of ``threads`` task threads each,
    passing them ``celery_args``, until they stop."""
    from worker.ops.metrics_server import start_metrics_server

    server = start_metrics_server()  # sets the multiprocess directory the children inherit
    env = {**os.environ, PORT_ENV: "0", SUPERVISOR_ENV: str(os.getpid())}
    children = [
        _Child(
            [
                sys.executable,
                "-m",
                "worker.cli",
                "worker",
                "--pool=threads",
                f"--concurrency={threads}",
                *celery_args,
                f"--hostname={child_name(hostname, n)}",
            ],
            env,
        )
        for n in range(1, processes + 1)
    ]
    try:
        return Supervisor(children).run()
    finally:
        if server is not None:
            server.stop()
