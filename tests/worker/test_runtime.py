"""The per-process runtime: one loop in its own thread, shared by every task
thread of the process (a threads pool), each waiting for its own coroutine."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from worker.ops.config import load_config
from worker.runtime import Runtime


@pytest.fixture
def runtime(redis_url: str, config_file: Path) -> Iterator[Runtime]:
    made = Runtime(load_config(str(config_file)), redis_url, shared=True)
    yield made
    made.close()


def test_a_prefork_childs_loop_runs_inside_each_task(redis_url: str, config_file: Path) -> None:
    """Not shared: the loop runs in the calling thread, only while a task
    runs, so Celery's time limits interrupt it like any task's code."""
    inline = Runtime(load_config(str(config_file)), redis_url)
    try:

        async def which() -> int:
            return threading.get_ident()

        assert inline.run(which()) == threading.get_ident()
        assert not inline.loop.is_running()
    finally:
        inline.close()


def test_task_threads_share_the_loop_and_wait_concurrently(runtime: Runtime) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def request() -> None:
        loops.append(asyncio.get_running_loop())
        await asyncio.sleep(0.3)  # a provider's answer time

    threads = [threading.Thread(target=runtime.run, args=(request(),)) for _ in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    took = time.monotonic() - started
    assert len(loops) == 8 and set(loops) == {runtime.loop}
    assert took < 1.0, took  # eight 0.3 s waits side by side, not one after another


def test_an_interrupted_wait_cancels_its_coroutine_before_it_goes_on(runtime: Runtime) -> None:
    ended: list[str] = []

    async def long_pass() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            ended.append("cancelled")
            raise

    runtime.main.timing = replace(runtime.main.timing, task_time_limit_s=0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        runtime.run(long_pass())  # waits at most the task time limit (+1 s)
    assert ended == ["cancelled"]
    assert time.monotonic() - started < 5
    assert runtime.run(asyncio.sleep(0, "still serving")) == "still serving"


def test_high_priority_work_runs_on_a_loop_of_its_own(runtime: Runtime) -> None:
    """A one-time code's pass does not wait behind the campaign's CPU work
    on the main loop: here a main loop held for 2 s by one callback."""
    high = runtime.lane(high=True)
    assert high is not runtime.main and high.loop is not runtime.loop
    assert runtime.lane(high=False) is runtime.main

    async def hog() -> None:
        time.sleep(2)  # CPU work that never yields, as a big chunk's parse

    async def code() -> tuple[asyncio.AbstractEventLoop, int]:
        await high.redis.ping()  # the lane's own client, bound to its loop
        return asyncio.get_running_loop(), threading.get_ident()

    hogging = threading.Thread(target=runtime.run, args=(hog(),))
    hogging.start()
    time.sleep(0.1)
    started = time.monotonic()
    loop, _ = high.run(code())
    took = time.monotonic() - started
    hogging.join(5)
    assert loop is high.loop
    assert took < 1.0, took


def test_a_prefork_child_has_one_lane(redis_url: str, config_file: Path) -> None:
    inline = Runtime(load_config(str(config_file)), redis_url)
    try:
        assert inline.lane(high=True) is inline.main
    finally:
        inline.close()
