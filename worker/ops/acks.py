"""A broker connection closed under a worker must fail as a connection error.

Celery 5.7 closes a lost broker connection before it reconnects
(``Consumer.on_connection_error_after_connected``). kombu's Redis channel
then builds its connection parameters from a transport whose client is
gone, and answers with an ``AttributeError`` where it means "closed":

- in that close itself, when the channel puts its unacked messages back
  (``restore_unacked``): Celery's ``ignore_errors`` ignores only connection
  errors, so the consumer dies ("Unrecoverable error") and the worker exits;
- in the ack (or reject) of a task that ran through the outage (we keep
  ``worker_cancel_long_running_tasks_on_connection_loss`` off: our tasks are
  idempotent): Celery logs only connection errors there, so again the worker
  exits.

Both were seen in CI, in the crash-safety test's 25 s Redis outage. Here the
channel raises redis-py's ``ConnectionError`` instead, which kombu lists as
a connection error of the transport: the close goes on, the ack is logged
("Couldn't ack"), and the message stays in kombu's unacked set, so the
visibility timeout brings it back and its task finds its work done.

Written by hand, as a wrapper of one kombu method (it covers the Sentinel
channel too, which inherits it): neither Celery nor kombu has a hook for it.
"""

from __future__ import annotations

import functools
from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

_PATCHED = "_smsbulk_closed_is_a_connection_error"


def closed_connection_fails_as_connection_error() -> None:
    """Wrap ``Channel._connparams`` once (idempotent)."""
    channel: Any = kombu_redis.Channel
    original = channel._connparams
    if getattr(original, _PATCHED, False):
        return

    @functools.wraps(original)
    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        transport = self.connection
        if transport is None or transport.client is None:
            raise RedisConnectionError("the broker connection was closed (reconnecting)")
        return original(self, asynchronous=asynchronous)

    setattr(_connparams, _PATCHED, True)
    channel._connparams = _connparams
