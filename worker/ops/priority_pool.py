"""The threads pool smsbulk's workers run on: Celery's, except that a free
thread takes a high-priority task before any other task waiting for one.

Why: Celery's threads pool hands tasks to a ThreadPoolExecutor, first come
first served. A campaign's chunks coming back from their deferrals queue
there for a thread, and a one-time code's tasks waited behind them: about
0.4 s for its plan and 0.7 s for its chunk, with every thread busy on a
saturated account (bench ``otp-behind-campaign``, p50 1.1 s from POST to
provider). The queue order (high first) only decides which message a worker
fetches next; this decides which fetched task runs next.

Hand-written: concurrent.futures has no executor with priorities, and this
is one queue and a loop.
"""

from __future__ import annotations

import itertools
import queue
import threading
from concurrent.futures import Future
from typing import Any

from celery.concurrency import thread

from producer.core import keys

HIGH, OTHER, STOP = 0, 1, 2  # the work queue's order; STOP after all work


class PriorityExecutor:
    """Up to ``max_workers`` threads (started as work comes) taking the
    oldest high-priority work first, then the oldest other."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._work: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, high: bool, fn: Any, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._work.put((HIGH if high else OTHER, next(self._order), (future, fn, args)))
            if len(self._threads) < self.max_workers:
                worker = threading.Thread(
                    target=self._run, name=f"smsbulk-task-{len(self._threads)}"
                )
                worker.daemon = True
                worker.start()
                self._threads.append(worker)
        return future

    def _run(self) -> None:
        while True:
            rank, _, item = self._work.get()
            if rank == STOP:
                return
            future, fn, args = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as error:  # the future carries it, as an executor's does
                future.set_exception(error)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    rank, order, item = self._work.get_nowait()
                except queue.Empty:
                    break
                if rank != STOP:
                    item[0].cancel()
        for _ in threads:
            self._work.put((STOP, next(self._order), None))
        if wait:
            for worker in threads:
                worker.join()

    @property
    def thread_count(self) -> int:
        return len(self._threads)


def is_high(delivery_info: dict[str, Any] | None) -> bool:
    """Whether a task's delivery_info (as kombu's Redis transport fills it)
    says it came from the high-priority queue."""
    return bool((delivery_info or {}).get("routing_key") == keys.HIGH_QUEUE)


def _from_high_queue(args: tuple[Any, ...] | None) -> bool:
    """Whether Celery's apply_target args are a task from the high queue."""
    request = args[2] if args and len(args) > 2 and isinstance(args[2], dict) else {}
    return is_high(request.get("delivery_info"))


class TaskPool(thread.TaskPool):  # type: ignore[misc]  # Celery is untyped
    """``--pool=threads`` in smsbulk's workers (worker/celery_app.py)."""

    executor: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.executor.shutdown()  # the base's, never used: it started no thread
        self.ordered = PriorityExecutor(self.limit)
        self.executor = self.ordered  # what the base's on_stop shuts down

    def on_apply(
        self,
        target: Any,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Any = None,
        accept_callback: Any = None,
        **_: Any,
    ) -> thread.ApplyResult:
        future = self.ordered.submit(
            _from_high_queue(args),
            thread.apply_target,
            target,
            args,
            kwargs,
            callback,
            accept_callback,
        )
        return thread.ApplyResult(future)

    def _get_info(self) -> Any:
        info = super(thread.TaskPool, self)._get_info()
        info.update({"max-concurrency": self.limit, "threads": self.ordered.thread_count})
        return info
