"""The default worker's pieces: names, options, and the supervisor over
children that are small Python processes, not workers."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time

import pytest

from worker.supervisor import (
    QUICK_DEATHS,
    THREADS_PER_PROCESS,
    PoolOptions,
    Supervisor,
    _Child,
    child_name,
    supervise,
)


def test_each_child_gets_a_hostname_of_its_own() -> None:
    assert child_name("bench1@%h", 2) == "bench1-2@%h"
    assert child_name(None, 1) == "smsbulk-1@%h"
    assert child_name("solo", 3) == "solo-3"


def test_the_pool_options_are_read_in_every_form_celery_takes() -> None:
    options = PoolOptions.parse(["-c", "8", "--loglevel=INFO", "--processes=3", "-n", "x@h"])
    assert (options.pool, options.concurrency, options.processes, options.hostname) == (
        None,
        8,
        3,
        "x@h",
    )
    assert options.others == ("--loglevel=INFO",)
    assert options.names_pool and options.supervised and options.process_count == 3
    options = PoolOptions.parse(["--pool=prefork", "--concurrency=4", "-Q", "q"])
    assert (options.pool, options.concurrency) == ("prefork", 4) and options.others == ("-Q", "q")
    assert options.names_pool and not options.supervised


def test_one_celery_worker_is_on_the_threads_pool_unless_a_pool_is_named() -> None:
    assert PoolOptions.parse(["--processes=1", "-l", "INFO"]).celery_args() == [
        "--pool=threads",
        f"--concurrency={THREADS_PER_PROCESS}",
        "-l",
        "INFO",
    ]
    assert PoolOptions.parse(["-P", "prefork", "-n", "a@h"]).celery_args() == [
        "--pool=prefork",
        "--hostname=a@h",
    ]
    children = PoolOptions.parse(["-c", "8", "-n", "a@h"])
    assert children.celery_args(hostname="a-2@h") == [
        "--pool=threads",
        "--concurrency=8",
        "--hostname=a-2@h",
    ]
    assert not PoolOptions.parse(["--loglevel=INFO"]).names_pool


@pytest.fixture(autouse=True)
def _keep_pytests_signal_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signal, "signal", lambda *_: None)


def test_a_child_that_keeps_dying_at_start_stops_the_supervisor_with_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dying = _Child([sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))
    staying = _Child([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ))
    started = time.monotonic()
    assert Supervisor([dying, staying]).run() == 1
    assert staying.exit_code() == -signal.SIGTERM  # the others were stopped
    assert time.monotonic() - started < 30
    assert capsys.readouterr().err.count("restarting it") == QUICK_DEATHS - 1


def test_a_child_that_exits_0_is_not_restarted() -> None:
    done = _Child([sys.executable, "-c", "pass"], dict(os.environ))
    assert Supervisor([done]).run() == 0


def test_a_childs_error_while_stopping_is_the_supervisors_exit_code() -> None:
    failing = _Child([sys.executable, "-c", "import time; time.sleep(1); raise SystemExit(4)"], {})
    supervisor = Supervisor([failing], stopping=True)  # as after a SIGTERM
    assert supervisor.run() == 4


def test_a_busy_metrics_port_leaves_the_workers_running_without_metrics(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A second `smsbulk worker` on a host, say: as a single Celery worker does.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setenv("SMSBULK_METRICS_HOST", "127.0.0.1")
        monkeypatch.setenv("SMSBULK_METRICS_PORT", str(taken.getsockname()[1]))
        started: list[list[_Child]] = []
        monkeypatch.setattr(Supervisor, "run", lambda self: started.append(self.children) or 0)
        assert supervise(PoolOptions.parse(["--processes=2"])) == 0
    assert len(started[0]) == 2
    assert "the workers run without /metrics" in capsys.readouterr().err
