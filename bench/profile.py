"""``--profile``: sample the workers with py-spy while a scenario sends, and
summarise where their CPU went.

py-spy attaches to each worker's main process with ``--subprocesses`` (so
the pool children are sampled too) and ``--nonblocking`` (it never pauses
them), and writes folded stacks (``frame;frame;... count``). The summary is
three tables: functions by own time (the leaf frame of a sample), smsbulk's
functions by inclusive time (anywhere on the stack, once per sample), and
own time by package. Counting folded stacks is a few lines; no library for it is needed.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

RATE_HZ = 100
TOP = 15

# "send (worker/pipeline/sending.py:123)" -> name "send", file "worker/pipeline/sending.py"
_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


class ProfilerMissing(RuntimeError):
    pass


@dataclass
class Profile:
    samples: int = 0
    own: list[tuple[str, float]] = field(default_factory=list)  # (function, % of samples)
    inclusive: list[tuple[str, float]] = field(default_factory=list)
    packages: list[tuple[str, float]] = field(default_factory=list)


def short_file(path: str) -> str:
    """A frame's file, relative to site-packages or the standard library
    (py-spy usually shortens them itself; absolute paths are what it leaves)."""
    if not path.startswith("/"):
        return path
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "/lib/python3" else tail
    for top in ("/worker/", "/producer/", "/bench/"):
        if top in path:
            return top[1:] + path.rsplit(top, 1)[1]
    return path


def package_of(file: str) -> str:
    """``celery/app/trace.py`` -> ``celery``; ``json/decoder.py`` -> ``json``."""
    head = file.split("/", 1)[0]
    return head.removesuffix(".py") or file


def parse_frame(frame: str) -> tuple[str, str] | None:
    """(function label, short file), or None for py-spy's process/thread frames."""
    if frame.startswith(("process ", "thread ")):
        return None
    match = _FRAME.match(frame)
    if match is None:
        return frame, frame
    file = short_file(match["file"])
    return f"{match['name']} ({file})", file


def _ours(file: str) -> bool:
    """smsbulk's own code, past the command-line entry point every sample shares."""
    return file.startswith(("worker/", "producer/")) and file != "worker/cli.py"


def summarise(folded: str, top: int = TOP) -> Profile:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in (parse_frame(raw) for raw in stack.split(";")) if f is not None]
        if not frames:
            continue
        samples += count
        leaf, leaf_file = frames[-1]
        own[leaf] += count
        packages[package_of(leaf_file)] += count
        for label in {label for label, file in frames if _ours(file)}:
            inclusive[label] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100 * n / samples) for name, n in counter.most_common(top)]

    if not samples:
        return Profile()
    return Profile(samples, shares(own), shares(inclusive), shares(packages))


def require_py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"  # the venv's, when PATH lacks it
    binary = str(beside) if beside.exists() else shutil.which("py-spy")
    if binary is None:
        raise ProfilerMissing("--profile needs py-spy: .venv/bin/pip install py-spy")
    return binary


class Profiler:
    """One ``py-spy record`` per worker main process, from ``start`` to ``stop``."""

    def __init__(self, out_dir: Path) -> None:
        self.binary = require_py_spy()
        self.out_dir = out_dir
        self.recorders: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, pids: Sequence[int]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for pid in pids:
            out = self.out_dir / f"py-spy-{pid}.txt"
            argv = [self.binary, "record", "--pid", str(pid), "--subprocesses", "--nonblocking"]
            argv += ["--rate", str(RATE_HZ), "--format", "raw", "--output", str(out)]
            log = (self.out_dir / f"py-spy-{pid}.log").open("wb")
            self.recorders.append(
                (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), out)
            )

    def stop(self) -> Profile:
        """Ends the recording (py-spy writes its file on SIGINT); the summary."""
        folded = []
        for process, out in self.recorders:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if out.exists():
                folded.append(out.read_text())
        self.recorders = []
        return summarise("\n".join(folded))
