"""The background threads' loop: a step every interval, errors survived."""

from __future__ import annotations

import threading

from worker.background.periodic import Periodic


class Flaky(Periodic):
    """Fails on its first step, then counts its steps."""

    def __init__(self) -> None:
        super().__init__("test-periodic", 0.01)
        self.steps = 0
        self.three = threading.Event()

    def step(self) -> None:
        self.steps += 1
        if self.steps == 1:
            raise ConnectionError("Redis is down")
        if self.steps == 3:
            self.three.set()


def test_a_failed_step_does_not_end_the_thread_and_stop_does() -> None:
    thread = Flaky()
    thread.start()
    try:
        assert thread.three.wait(5)
    finally:
        thread.stop()
        thread.join(5)
    assert not thread.is_alive()
    assert thread.steps >= 3
