"""The threads pool's executor: high-priority work first, futures as
concurrent.futures gives them, and a shutdown that ends every thread."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError

import pytest

from producer.core import keys
from worker.ops.priority_pool import PriorityExecutor, TaskPool, is_high

WAIT_S = 10


def test_a_free_thread_takes_high_priority_work_before_older_other_work() -> None:
    executor = PriorityExecutor(1)
    release, ran = threading.Event(), []
    busy = executor.submit(False, release.wait, WAIT_S)  # the one thread is taken
    queued = [
        executor.submit(False, ran.append, "campaign-1"),
        executor.submit(False, ran.append, "campaign-2"),
        executor.submit(True, ran.append, "code-1"),
        executor.submit(True, ran.append, "code-2"),
    ]
    release.set()
    for future in [busy, *queued]:
        future.result(WAIT_S)
    assert ran == ["code-1", "code-2", "campaign-1", "campaign-2"]
    executor.shutdown()


def test_results_and_errors_reach_the_futures() -> None:
    executor = PriorityExecutor(4)
    assert executor.submit(False, sum, [1, 2, 3]).result(WAIT_S) == 6
    with pytest.raises(ZeroDivisionError):
        executor.submit(True, divmod, 1, 0).result(WAIT_S)
    executor.shutdown()


def test_threads_start_as_work_comes_up_to_the_limit() -> None:
    executor = PriorityExecutor(3)
    assert executor.thread_count == 0
    release = threading.Event()
    futures = [executor.submit(False, release.wait, WAIT_S) for _ in range(5)]
    assert executor.thread_count == 3
    release.set()
    assert all(f.result(WAIT_S) for f in futures)
    executor.shutdown()


def test_shutdown_cancels_queued_work_and_ends_every_thread() -> None:
    executor = PriorityExecutor(1)
    release = threading.Event()
    running = executor.submit(False, release.wait, WAIT_S)
    waiting = executor.submit(True, print, "never")
    stopper = threading.Thread(target=executor.shutdown, kwargs={"cancel_futures": True})
    stopper.start()
    release.set()
    stopper.join(WAIT_S)
    assert not stopper.is_alive()
    assert running.result(WAIT_S) is True
    with pytest.raises(CancelledError):
        waiting.result(WAIT_S)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(False, print, "late")


def test_only_the_high_queue_is_high() -> None:
    assert is_high({"routing_key": keys.HIGH_QUEUE, "exchange": ""})
    assert not is_high({"routing_key": keys.NORMAL_QUEUE})
    assert not is_high(None) and not is_high({})


def test_the_pool_orders_celery_tasks_by_their_queue() -> None:
    """Celery's apply_target arguments as a Request passes them: the request
    dict (third) carries the delivery_info."""
    pool = TaskPool(limit=1)
    release, ran = threading.Event(), []

    def task_args(queue: str) -> tuple[object, ...]:
        return ("task", "id", {"delivery_info": {"routing_key": queue}}, b"", "json", "utf-8")

    pool.on_apply(lambda *_: release.wait(WAIT_S), task_args(keys.NORMAL_QUEUE))
    normal = pool.on_apply(lambda *_: ran.append("normal"), task_args(keys.NORMAL_QUEUE))
    high = pool.on_apply(lambda *_: ran.append("high"), task_args(keys.HIGH_QUEUE))
    release.set()
    normal.wait(WAIT_S)
    high.wait(WAIT_S)
    assert ran == ["high", "normal"]
    assert pool._get_info()["threads"] == 1
    pool.on_stop()
