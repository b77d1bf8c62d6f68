"""Memory and CPU of processes, read from /proc (Linux only).

A Celery worker is a process group (the launcher starts each child in its
own session), so "a worker" here is every process in the group: the main
process and its pool children.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name (which may hold spaces)."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def group_pids(pgid: int) -> list[int]:
    """Every live process whose process group is ``pgid``."""
    pids = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        # fields[0] is the state, [1] the parent, [2] the process group.
        if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return sorted(pids)


def cpu_s(pid: int, reaped_children: bool = True) -> float | None:
    """User + system CPU seconds of ``pid`` (plus its waited-for children)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # utime, stime, cutime, cstime are fields 14-17 of stat: 11-14 here.
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS_PER_S


def status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` line of /proc/PID/status, e.g. ``VmHWM`` (peak RSS) or ``VmRSS``."""
    try:
        lines = (_PROC / str(pid) / "status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    for line in lines:
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def reset_own_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0), so that
    VmHWM read later is the peak since now. False if the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class GroupWatch:
    """Peak RSS and CPU time of a process group, sampled now and then.

    Per-process peaks (VmHWM) are kept across samples, so a pool child that
    exits before the last sample still counts. The sum of per-process peaks
    can exceed the group's true simultaneous peak; for a worker whose pool
    children live as long as it does, they coincide closely.
    """

    pgid: int
    peak_kb: dict[int, int] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)
    rss_kb: int = 0

    def sample(self) -> None:
        rss = 0
        for pid in group_pids(self.pgid):
            hwm = status_kb(pid, "VmHWM")
            if hwm is not None:
                self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), hwm)
            rss += status_kb(pid, "VmRSS") or 0
            seconds = cpu_s(pid)
            if seconds is not None:
                self.cpu[pid] = seconds
        self.rss_kb = rss

    @property
    def peak_total_kb(self) -> int:
        return sum(self.peak_kb.values())

    @property
    def cpu_total_s(self) -> float:
        return sum(self.cpu.values())

    @property
    def leader_cpu_s(self) -> float:
        """The group leader's share: a Celery worker's main process."""
        return self.cpu.get(self.pgid, 0.0)

    @property
    def processes(self) -> int:
        return len(self.peak_kb)


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def own_rss_kb(key: str = "VmRSS") -> int:
    with contextlib.suppress(Exception):
        value = status_kb(os.getpid(), key)
        if value is not None:
            return value
    return 0
