"""A task that ran through a broker reconnect: its ack must not kill the
worker (Celery 5.7 closes the old connection first; seen in CI as the
crash-safety test's worker dying on a 25 s Redis outage)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.worker.request import Request
from kombu import Connection, Message, Queue

from worker.ops.acks import ReconnectSafeRequest

QUEUE = "acks-test"
TASK = "smsbulk.test.noop"


def _app(redis_url: str) -> Celery:
    app = Celery("acks-test", broker=redis_url)

    @app.task(name=TASK, shared=False)
    def noop() -> None:
        pass

    app.send_task(TASK, queue=QUEUE)
    return app


@pytest.fixture
def delivered(redis_url: str) -> Iterator[tuple[Celery, Message]]:
    """A task message delivered (unacked) on a connection that was then
    closed as Celery 5.7 closes a lost one: pool gone, transport detached."""
    app = _app(redis_url)
    connection = Connection(redis_url)
    got: list[Message] = []
    consumer = connection.Consumer([Queue(QUEUE)], callbacks=[lambda _b, m: got.append(m)])
    consumer.consume()
    connection.drain_events(timeout=5)
    message = got[0]
    channel: Any = message.channel
    transport = channel.connection
    channel._disconnect_pools()  # what a failed close leaves
    transport.client = None  # what Connection.collect leaves
    yield app, message
    transport.client = connection
    connection.close()
    app.close()


def _request(cls: type[Request], app: Celery, message: Message) -> Request:
    return cls(message, on_ack=message.ack_log_error, on_reject=message.reject_log_error, app=app)


def test_celerys_own_request_dies_on_that_ack(delivered: tuple[Celery, Message]) -> None:
    app, message = delivered
    with pytest.raises(AttributeError):
        _request(Request, app, message).acknowledge()


def test_the_ack_is_logged_and_the_message_stays_unacked(
    delivered: tuple[Celery, Message], redis_client: Any
) -> None:
    app, message = delivered
    request = _request(ReconnectSafeRequest, app, message)
    request.acknowledge()
    assert request.acknowledged
    # Still in kombu's unacked set: the visibility timeout brings it back.
    assert redis_client.hexists("unacked", message.delivery_tag)


def test_a_reject_too(delivered: tuple[Celery, Message], redis_client: Any) -> None:
    app, message = delivered
    request = _request(ReconnectSafeRequest, app, message)
    request.reject(requeue=False)
    assert request.acknowledged
    assert redis_client.hexists("unacked", message.delivery_tag)


def test_other_attribute_errors_still_raise(redis_url: str) -> None:
    app = _app(redis_url)
    with Connection(redis_url) as connection:
        got: list[Message] = []
        consumer = connection.Consumer([Queue(QUEUE)], callbacks=[lambda _b, m: got.append(m)])
        consumer.consume()
        connection.drain_events(timeout=5)

        def broken(*_: object) -> None:
            raise AttributeError("a bug, not a closed channel")

        request = ReconnectSafeRequest(got[0], on_ack=broken, app=app)
        with pytest.raises(AttributeError, match="a bug"):
            request.acknowledge()
    app.close()
