"""Streaming submission against a real Valkey: messages are checked and
staged a block at a time, and a job appears whole or not at all."""

from __future__ import annotations

import gc
import itertools
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer import Job, JobExists, JobRefused, Message, Producer
from producer import submission as submission_module
from producer.accounts import AccountInfo
from producer.core import keys
from producer.core.store import (
    StoredMessage,
    block_count,
    decode_block,
    encode_block,
)
from producer.submission import UploadExpired, store_job
from producer.validation import MAX_ERRORS, open_job

ACCOUNTS = {"bulk": AccountInfo("bulk", "sendbulk")}


def numbers(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"to": f"07{20000000 + start + i}", "ref": f"r{start + i}"} for i in range(count)]


def job(messages: Any, **fields: Any) -> dict[str, Any]:
    return {"provider": "bulk", "text": "hi", "messages": messages, **fields}


def stored_messages(client: redis.Redis, job_id: str) -> list[StoredMessage]:
    total = int(client.hget(keys.job(job_id), "total") or 0)
    raw_blocks = [client.get(keys.block(job_id, n)) for n in range(block_count(total))]
    return [message for raw in raw_blocks for message in decode_block(raw or b"[]")]


class Counted:
    """An iterable of messages that counts how many were read."""

    def __init__(self, messages: Iterable[dict[str, Any]]) -> None:
        self.messages = messages
        self.read = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for message in self.messages:
            self.read += 1
            yield message


def every_key(client: redis.Redis) -> list[bytes]:
    return sorted(client.keys("*"))


def test_refusal_deep_in_the_job_leaves_no_key_at_all(
    producer: Producer, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Write every staged block at once, so that blocks 0 and 1 are in Redis
    # when message 2500 is found invalid; look at Redis just before cleanup.
    monkeypatch.setattr(submission_module, "BLOCKS_PER_WRITE", 1)
    staged_before_cleanup: list[bytes] = []
    discard = submission_module._discard

    def spying_discard(client: redis.Redis, upload: str, blocks: int) -> None:
        staged_before_cleanup.extend(client.keys(f"{keys.PREFIX}:upload:*"))
        discard(client, upload, blocks)

    monkeypatch.setattr(submission_module, "_discard", spying_discard)
    messages = numbers(3000)
    messages[2500] = {"to": ""}
    with pytest.raises(JobRefused) as refused:
        producer.submit(job(messages, job_id="deep"))
    assert [e["field"] for e in refused.value.errors] == ["messages[2500].to"]
    assert len(staged_before_cleanup) == 2  # blocks 0 and 1 had been staged
    assert every_key(redis_client) == []  # no job hash, block, staging key or index entry
    assert redis_client.zcard(keys.JOBS_INDEX) == 0


def test_a_missing_text_is_named_by_its_index_in_the_whole_job(producer: Producer) -> None:
    messages = [{"to": "0712345678", "text": "own"}] * 4000
    messages[1234] = messages[3999] = {"to": "0712345678"}
    with pytest.raises(JobRefused) as refused:
        producer.submit(job(messages, text=None))
    assert [e["field"] for e in refused.value.errors] == [
        "messages[1234].text",
        "messages[3999].text",
    ]


def test_errors_stop_at_twenty_and_reading_stops_with_them(
    producer: Producer, redis_client: redis.Redis
) -> None:
    endless = Counted({"to": ""} for _ in itertools.repeat(None))
    with pytest.raises(JobRefused) as refused:
        producer.submit(job(endless))
    assert [e["field"] for e in refused.value.errors] == [
        f"messages[{i}].to" for i in range(MAX_ERRORS)
    ]
    assert endless.read == keys.BLOCK_SIZE  # one block read, not an endless job
    assert every_key(redis_client) == []


def test_an_empty_generator_is_refused_naming_messages(
    producer: Producer, redis_client: redis.Redis
) -> None:
    with pytest.raises(JobRefused) as refused:
        producer.submit(job(message for message in ()))
    assert [(e["field"], e["type"]) for e in refused.value.errors] == [("messages", "too_short")]
    assert every_key(redis_client) == []


@pytest.mark.parametrize("messages", ["0712345678", {"to": "0712345678"}, 7, None])
def test_messages_that_are_not_a_list_are_refused(producer: Producer, messages: Any) -> None:
    with pytest.raises(JobRefused) as refused:
        producer.submit(job(messages))
    assert [(e["field"], e["type"]) for e in refused.value.errors] == [("messages", "list_type")]


def test_a_generator_of_messages_is_stored_and_counted(
    producer: Producer, redis_client: redis.Redis
) -> None:
    job_id = producer.submit(job(message for message in numbers(2345)))
    status = producer.status(job_id)
    assert (status.total, status.counts["pending"], status.state) == (2345, 2345, "queued")
    assert [r.ref for r in producer.results(job_id)] == [f"r{i}" for i in range(2345)]
    assert redis_client.keys(f"{keys.PREFIX}:upload:*") == []
    # Blocks are permanent once committed (staging keys expire).
    assert redis_client.ttl(keys.block(job_id, 2)) == -1


def test_a_3000_message_job_is_stored_as_before(
    producer: Producer, redis_client: redis.Redis
) -> None:
    messages = numbers(3000)
    messages[7] = {"to": "0712345678", "text": "own text", "params": ["a", "b"]}
    job_id = producer.submit(job(messages, job_id="as-before"))
    # Exactly the blocks the whole-job store wrote: encode_block of 1000 Messages each.
    for block_no in range(3):
        chunk = messages[block_no * 1000 : (block_no + 1) * 1000]
        expected = encode_block(Message.model_validate(m) for m in chunk)
        assert redis_client.get(keys.block(job_id, block_no)) == expected.encode()
    outcomes = list(producer.results(job_id))
    assert [(o.index, o.to, o.ref) for o in outcomes] == [
        (i, m["to"], m.get("ref")) for i, m in enumerate(messages)
    ]
    assert {o.status for o in outcomes} == {"pending"}


def test_a_job_model_is_submitted_as_before(producer: Producer) -> None:
    model = Job.model_validate(job(numbers(1500), job_id="model", priority="high"))
    assert producer.submit(model) == "model"
    assert producer.status("model").total == 1500
    assert [o.ref for o in producer.results("model")][-1] == "r1499"


def test_a_taken_job_id_is_refused_before_reading_the_messages(
    producer: Producer, redis_client: redis.Redis
) -> None:
    producer.submit(job(numbers(2500), job_id="taken"))
    first_blocks = [redis_client.get(keys.block("taken", n)) for n in range(3)]
    again = Counted(numbers(3000, start=9000))
    with pytest.raises(JobExists):
        producer.submit(job(again, job_id="taken"))
    assert again.read == 0
    assert [redis_client.get(keys.block("taken", n)) for n in range(3)] == first_blocks
    assert producer.status("taken").total == 2500
    assert redis_client.keys(f"{keys.PREFIX}:upload:*") == []


def test_a_job_id_taken_while_streaming_keeps_the_first_job_whole(
    producer: Producer, redis_client: redis.Redis, redis_url: str, config_file: Path
) -> None:
    """Two submissions of one id at once: the first to commit wins, the
    other's staged blocks are dropped by the same atomic commit."""
    rival = Producer(redis_url)

    def racing() -> Iterator[dict[str, Any]]:
        yield from numbers(1500, start=5000)
        rival.submit(job(numbers(2500), job_id="race"))  # commits first
        yield from numbers(1500, start=6500)

    with pytest.raises(JobExists):
        producer.submit(job(racing(), job_id="race"))
    rival.close()
    assert producer.status("race").total == 2500
    assert [m.ref for m in stored_messages(redis_client, "race")] == [f"r{i}" for i in range(2500)]
    assert redis_client.keys(f"{keys.PREFIX}:upload:*") == []
    assert redis_client.exists(keys.block("race", 3)) == 0


def test_a_crash_while_streaming_leaves_nothing_but_expiring_keys(
    producer: Producer, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submission_module, "BLOCKS_PER_WRITE", 1)
    ttls: list[int] = []

    def failing() -> Iterator[dict[str, Any]]:
        yield from numbers(2500)
        staged = redis_client.keys(f"{keys.PREFIX}:upload:*")
        ttls.extend(redis_client.ttl(key) for key in staged)
        raise ConnectionResetError("the application's source failed")

    with pytest.raises(ConnectionResetError):
        producer.submit(job(failing(), job_id="crash"))
    assert len(ttls) == 2 and all(0 < ttl <= keys.UPLOAD_TTL_S for ttl in ttls)
    assert every_key(redis_client) == []


def test_staged_blocks_that_expired_mid_submission_store_nothing(
    producer: Producer, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submission_module, "BLOCKS_PER_WRITE", 1)

    def slow() -> Iterator[dict[str, Any]]:
        yield from numbers(2500)
        for key in redis_client.keys(f"{keys.PREFIX}:upload:*"):  # as if UPLOAD_TTL_S passed
            redis_client.delete(key)

    with pytest.raises(UploadExpired):
        producer.submit(job(slow(), job_id="slow"))
    assert every_key(redis_client) == []


message_dicts = st.fixed_dictionaries(
    {"to": st.text(min_size=1, max_size=12)},
    optional={
        "text": st.none() | st.text(max_size=20),
        "params": st.none() | st.lists(st.text(max_size=4), max_size=3),
        "ref": st.none() | st.text(max_size=8),
    },
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(messages=st.lists(message_dicts, min_size=1, max_size=40), as_generator=st.booleans())
def test_stored_blocks_decode_to_the_submitted_messages(
    redis_client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    messages: list[dict[str, Any]],
    as_generator: bool,
) -> None:
    monkeypatch.setattr(keys, "BLOCK_SIZE", 7)  # small jobs, many blocks
    redis_client.flushall()
    source = iter(messages) if as_generator else messages
    check, unread = open_job(job(source, text="default"), ACCOUNTS)
    store_job(redis_client, check, unread, "prop")
    assert check.total == len(messages)
    assert stored_messages(redis_client, "prop") == [
        StoredMessage(m["to"], m.get("text"), m.get("params"), m.get("ref")) for m in messages
    ]
    assert redis_client.keys(f"{keys.PREFIX}:upload:*") == []


def test_the_garbage_collector_is_left_as_it_was(producer: Producer) -> None:
    """Submission freezes the objects that exist (gc.freeze) while it streams,
    and leaves an application's own freeze alone."""
    producer.submit(job(numbers(10)))
    with pytest.raises(JobRefused):
        producer.submit(job([{"to": ""}]))
    assert gc.get_freeze_count() == 0 and gc.isenabled()
    gc.freeze()
    try:
        producer.submit(job(numbers(10)))
        assert gc.get_freeze_count() > 0  # not unfrozen by the submission
    finally:
        gc.unfreeze()


# --- input limits on every way in (docs/INTERFACE.md "Input limits") ---------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda raw: raw,  # a dict
        lambda raw: json.dumps(raw),  # JSON text: "\ud83d", as a JavaScript client writes it
        lambda raw: json.dumps(raw).encode(),
    ],
)
def test_producer_submit_refuses_a_lone_surrogate_storing_nothing(
    producer: Producer, redis_client: redis.Redis, make: Any
) -> None:
    raw = job(numbers(1500) + [{"to": "0712345678", "ref": "cut \ud83d"}])
    with pytest.raises(JobRefused) as info:
        producer.submit(make(raw))
    assert [e["field"] for e in info.value.errors] == ["messages[1500].ref"]
    assert every_key(redis_client) == []


def submit_task(job: dict[str, Any], task_id: str) -> Any:
    """The Celery submit_job task run in this process, as a worker runs it."""
    from worker import tasks

    tasks.submit_job.push_request(id=task_id, args=[job])
    try:
        return tasks.submit_job.run(job)
    finally:
        tasks.submit_job.pop_request()


@pytest.fixture
def task_redis(
    redis_client: redis.Redis, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> redis.Redis:
    from worker import tasks

    monkeypatch.setattr(tasks, "_redis", redis_client)
    # No broker here: a plan the task would publish is recorded instead.
    monkeypatch.setattr(tasks, "publish_plan", lambda *args: planned.append(args[2]))
    return redis_client


planned: list[str] = []


def test_the_celery_submit_task_refuses_a_lone_surrogate(task_redis: redis.Redis) -> None:
    answer = submit_task(job([{"to": "0712345678", "text": "\ud83d"}]), "task-1")
    assert answer["error"] == "invalid job"
    assert [e["field"] for e in answer["errors"]] == ["messages[0].text"]
    assert every_key(task_redis) == []


@pytest.mark.parametrize("task_id", ["acc-q-evil:m:0", "x" * 65, "a b", "évil", ""])
def test_a_celery_task_id_not_of_the_job_id_form_makes_no_job(
    task_redis: redis.Redis, task_id: str
) -> None:
    answer = submit_task(job(numbers(3)), task_id)
    assert set(answer) == {"error"} and "task id" in answer["error"]
    assert every_key(task_redis) == []


@pytest.mark.parametrize(
    ("schedule_in_s", "state"), [(None, "queued"), (-60, "queued"), (3600, "scheduled")]
)
def test_store_job_returns_the_state_it_stored_the_job_in(
    redis_client: redis.Redis, schedule_in_s: int | None, state: str
) -> None:
    fields: dict[str, Any] = {}
    if schedule_in_s is not None:
        fields["schedule_at"] = (datetime.now(UTC) + timedelta(seconds=schedule_in_s)).isoformat()
    check, unread = open_job(job(numbers(3), **fields), ACCOUNTS)
    stored = store_job(redis_client, check, unread, "decided")
    assert stored.state == state
    assert redis_client.hget(keys.job("decided"), "state") == state.encode()
    assert stored.spec.priority == "normal"
    listed = keys.SCHEDULED if state == "scheduled" else keys.ACTIVE
    assert redis_client.zscore(listed, "decided") is not None
