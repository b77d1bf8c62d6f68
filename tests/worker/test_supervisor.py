"""The default worker's pieces that need no processes: names and options."""

from __future__ import annotations

from worker.cli import _pool_options
from worker.supervisor import child_name


def test_each_child_gets_a_hostname_of_its_own() -> None:
    assert child_name("bench1@%h", 2) == "bench1-2@%h"
    assert child_name(None, 1) == "smsbulk-1@%h"
    assert child_name("solo", 3) == "solo-3"


def test_the_pool_options_are_read_in_every_form_celery_takes() -> None:
    options, rest = _pool_options(["-c", "8", "--loglevel=INFO", "--processes=3", "-n", "x@h"])
    assert (options.pool, options.concurrency, options.processes, options.hostname) == (
        None,
        8,
        3,
        "x@h",
    )
    assert rest == ["--loglevel=INFO"]
    options, rest = _pool_options(["--pool=prefork", "--concurrency=4", "-Q", "q"])
    assert (options.pool, options.concurrency) == ("prefork", 4) and rest == ["-Q", "q"]
