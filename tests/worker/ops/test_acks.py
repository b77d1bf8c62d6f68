"""A broker connection closed under a worker (Celery 5.7 closes a lost one
before reconnecting): its channel's close and a late ack must fail as
connection errors, which Celery tolerates, not as AttributeErrors, which
killed the worker in CI (the crash-safety test's 25 s Redis outage)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Message, Queue
from kombu.common import ignore_errors
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

from worker.ops.acks import closed_connection_fails_as_connection_error

QUEUE = "acks-test"


@pytest.fixture
def delivered(redis_url: str) -> Iterator[tuple[Connection, Message]]:
    """A message delivered (unacked) on a connection left as Celery 5.7
    leaves a lost one: the channel's pool gone, its transport detached."""
    closed_connection_fails_as_connection_error()  # as worker.celery_app does
    with Connection(redis_url) as producer:
        producer.Producer().publish({"n": 1}, routing_key=QUEUE, declare=[Queue(QUEUE)])
    connection = Connection(redis_url)
    got: list[Message] = []
    consumer = connection.Consumer([Queue(QUEUE)], callbacks=[lambda _b, m: got.append(m)])
    consumer.consume()
    connection.drain_events(timeout=5)
    channel: Any = got[0].channel
    transport = channel.connection
    channel._disconnect_pools()  # what a failed ping or close leaves
    transport.client = None  # what Connection.collect leaves
    yield connection, got[0]
    transport.client = connection
    ignore_errors(connection, connection.close)


def test_without_the_wrapper_kombu_answers_attribute_error(
    delivered: tuple[Connection, Message], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, message = delivered
    unwrapped = kombu_redis.Channel._connparams.__wrapped__  # type: ignore[attr-defined]
    monkeypatch.setattr(kombu_redis.Channel, "_connparams", unwrapped)
    with pytest.raises(AttributeError):
        message.ack()


def test_a_late_ack_is_a_connection_error_and_the_message_stays_unacked(
    delivered: tuple[Connection, Message], redis_client: Any
) -> None:
    connection, message = delivered
    with pytest.raises(RedisConnectionError):
        message.ack()
    assert any(issubclass(RedisConnectionError, e) for e in connection.connection_errors)
    # Celery's path: logged, not raised.
    message.ack_log_error(logging.getLogger("test"), connection.connection_errors)
    assert redis_client.hexists("unacked", message.delivery_tag)


def test_closing_that_channel_goes_on(
    delivered: tuple[Connection, Message], redis_client: Any
) -> None:
    _, message = delivered
    channel: Any = message.channel
    # Celery: ignore_errors(connection, connection.close) ends in channel.close().
    ignore_errors(channel.connection, channel.close)
    assert channel.closed
    assert redis_client.hexists("unacked", message.delivery_tag)


def test_the_wrapper_is_installed_once() -> None:
    closed_connection_fails_as_connection_error()
    first = kombu_redis.Channel._connparams
    closed_connection_fails_as_connection_error()
    assert kombu_redis.Channel._connparams is first
