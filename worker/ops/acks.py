"""Acknowledging a task whose broker connection was replaced while it ran.

Celery 5.7 closes a lost broker connection before it reconnects, but lets
the tasks then running finish (``worker_cancel_long_running_tasks_on_connection_loss``
is off: our tasks are idempotent). Such a task's message belongs to the
closed channel, and kombu's Redis transport answers its ack (or reject)
with an ``AttributeError`` instead of a connection error; Celery lets that
escape and the worker process exits (seen in the crash-safety test's
25 s Redis outage). Here that error counts as what it is, a connection
error: logged, and the message stays in kombu's unacked set, so the
visibility timeout brings it back and its task finds its work done.

Written by hand: neither Celery nor kombu offers a hook for this.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import Task
from celery.worker.request import Request

log = structlog.get_logger(__name__)


def _channel_closed(message: Any) -> bool:
    channel = getattr(message, "channel", None)
    transport = getattr(channel, "connection", None)
    return transport is None or getattr(transport, "client", None) is None


class ReconnectSafeRequest(Request):  # type: ignore[misc]
    """A Celery request whose ack or reject tolerates a closed channel."""

    def acknowledge(self) -> None:
        try:
            super().acknowledge()
        except AttributeError:
            if not _channel_closed(self.message):
                raise
            self._unacknowledged("ack")

    def reject(self, requeue: bool = False) -> None:
        try:
            super().reject(requeue=requeue)
        except AttributeError:
            if not _channel_closed(self.message):
                raise
            self._unacknowledged("reject")

    def _unacknowledged(self, what: str) -> None:
        self.acknowledged = True  # the old channel can do nothing more with it
        log.warning(
            "broker connection replaced while the task ran; its message comes back "
            "after the visibility timeout and finds its work done",
            task=self.task_name,
            task_id=self.id,
            action=what,
        )


class SmsbulkTask(Task):  # type: ignore[misc]
    """Every smsbulk task's base: the request class above."""

    Request = ReconnectSafeRequest
