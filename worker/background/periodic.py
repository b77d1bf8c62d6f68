"""A worker main process's background thread: one step every few seconds.

The scheduler's releaser, the retention sweeper and the watchdog are each a
``Periodic``: started when the worker is ready, stopped when it shuts down
(worker/celery_app.py). A step that fails (a Redis outage, say) is logged
and the next one comes as usual: the thread never ends on an error.
"""

from __future__ import annotations

import threading

from worker.ops.logs import get_logger

log = get_logger()


class Periodic(threading.Thread):
    """Calls ``step`` every ``interval_s`` seconds until ``stop``."""

    failure_event = "background_step_failed"  # the log event of a failed step

    def __init__(self, name: str, interval_s: float) -> None:
        super().__init__(name=name, daemon=True)
        self.interval_s = interval_s
        self.stopping = threading.Event()

    def step(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        while not self.stopping.wait(self.interval_s):
            try:
                self.step()
            except Exception as error:  # keep going after a Redis outage
                log.warning(self.failure_event, error=str(error))

    def stop(self) -> None:
        self.stopping.set()
