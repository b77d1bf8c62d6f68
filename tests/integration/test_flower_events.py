"""The task events Flower consumes, captured the way Flower does
(``celery.events.EventReceiver`` on the broker connection) while a real
worker runs jobs: every task appears with its name, and no event carries a
phone number, a text or a credential (arguments are ids only)."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.events import EventReceiver

from producer import Producer
from producer.core import keys
from tests.integration.stack import Stack, make_stack, ro_numbers
from worker.dev.launcher import wait_until

pytestmark = pytest.mark.integration

TEXT = "Flower must never show this text"
SECRETS = ("sandbox-partner", "sandbox-key")  # the sandbox account's credentials
# An account producers know and the worker does not (a rolling deploy): the
# plan task is retried, through Celery's retry.
GHOST_ACCOUNT = """
[providers.ghost]
kind = "sendbulk"
base_url = "http://127.0.0.1:9"
partner_id = "x"
api_key = "x"
shortcode = "X"
default_region = "RO"
"""
LIFECYCLE = ("task-sent", "task-received", "task-started", "task-succeeded")


class FlowerProbe:
    """Collect every event from the broker in a thread, as Flower's Events does."""

    def __init__(self, redis_url: str) -> None:
        self.app = Celery("flower-probe", broker=redis_url, set_as_current=False)
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._receiver: EventReceiver | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def _run(self) -> None:
        with self.app.connection() as connection:
            self._receiver = EventReceiver(connection, handlers={"*": self._on_event}, app=self.app)
            # wakeup: ask the workers for a heartbeat, our sign of being subscribed.
            self._receiver.capture(limit=None, timeout=None, wakeup=True)

    def start(self) -> None:
        self._thread.start()
        wait_until(lambda: bool(self.snapshot()), 30, "a first event (worker heartbeat)")

    def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(10)
        self.app.close()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)


def tasks_by_id(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """uuid -> name, event types and the argument summaries shown, as Flower merges them."""
    tasks: dict[str, dict[str, Any]] = defaultdict(lambda: {"types": [], "args": set()})
    for event in events:
        if not event["type"].startswith("task-"):
            continue
        task = tasks[event["uuid"]]
        task["types"].append(event["type"])
        if event.get("name"):
            task["name"] = event["name"]
        if "args" in event:
            task["args"].add((event["args"], event.get("kwargs")))
    return tasks


@pytest.fixture
def stack(valkey: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    url = valkey.connection_url  # type: ignore[attr-defined]
    redis.Redis.from_url(url).flushall()
    built = make_stack(url, tmp_path_factory.mktemp("flower"), workers=1)
    try:
        yield built
    finally:
        built.stop()


def test_flower_sees_every_task_by_name_with_ids_only(stack: Stack, tmp_path: Path) -> None:
    probe = FlowerProbe(stack.redis_url)
    probe.start()
    try:
        producer = stack.producer()
        numbers = ro_numbers(12)
        job_id = producer.submit(
            {"provider": "bulk", "text": TEXT, "messages": [{"to": n} for n in numbers]}
        )
        # Released by the worker's scheduler, not by the producer.
        due = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        scheduled = producer.submit(
            {"provider": "bulk", "text": TEXT, "schedule_at": due, "messages": [{"to": numbers[0]}]}
        )
        ghost_config = tmp_path / "ghost.toml"
        ghost_config.write_text(stack.config.read_text() + GHOST_ACCOUNT)
        ghost_producer = Producer(stack.redis_url, config_path=str(ghost_config))
        ghost = ghost_producer.submit(
            {"provider": "ghost", "text": TEXT, "messages": [{"to": numbers[1]}]}
        )
        ghost_producer.close()
        # Any Celery client, as docs/INTERFACE.md documents it.
        submitter = Celery("client", broker=stack.redis_url, set_as_current=False)
        submitted = submitter.send_task(
            keys.SUBMIT_JOB,
            args=[{"provider": "bulk", "text": TEXT, "messages": [{"to": numbers[2]}]}],
            queue=keys.INGEST_QUEUE,
            argsrepr="job",
        ).id
        submitter.close()
        producer.close()
        stack.wait_for(job_id)
        stack.wait_for(scheduled)

        def seen() -> bool:
            tasks = tasks_by_id(probe.snapshot())
            return (
                all(set(LIFECYCLE) <= set(t["types"]) for t in of_jobs(tasks, job_id, scheduled))
                and len(of_jobs(tasks, job_id, scheduled)) == 4  # a plan and a chunk each
                and any("task-retried" in t["types"] for t in of_jobs(tasks, ghost))
                and "task-succeeded" in tasks[submitted]["types"]
            )

        wait_until(seen, 60, "the task events of every job")
    finally:
        probe.stop()

    events = probe.snapshot()
    tasks = tasks_by_id(events)
    names = {t.get("name") for t in tasks.values()}
    assert {keys.PLAN_JOB, keys.SEND_CHUNK, keys.SUBMIT_JOB} <= names
    for task in tasks.values():
        assert task.get("name"), task  # every task shown by name

    # Each kind of task shows exactly its ids, on every event that carries
    # arguments, retries included (Celery's own retry would show repr(args)).
    for task in of_jobs(tasks, job_id, scheduled):
        assert set(LIFECYCLE) <= set(task["types"]), task
    every_job = (job_id, scheduled, ghost, submitted)  # the Celery submission's id is its job's
    for task in tasks.values():
        if task["name"] == keys.PLAN_JOB:
            ((args, kwargs),) = task["args"]
            assert args in {f"job_id={j}" for j in every_job} and kwargs == "{}"
        elif task["name"] == keys.SEND_CHUNK:
            assert {args for args, _ in task["args"]} <= {f"job_id={j}, chunk=0" for j in every_job}
        elif task["name"] == keys.SUBMIT_JOB:
            assert {args for args, _ in task["args"]} == {"job"}
    (ghost_plan,) = of_jobs(tasks, ghost)
    assert ghost_plan["types"].count("task-sent") >= 2  # the first send and the retry

    # Nothing Flower receives carries a number, a text or a credential.
    everything = json.dumps(events)
    forbidden = [TEXT, *SECRETS, *numbers, *("40" + n[1:] for n in numbers)]
    assert not [word for word in forbidden if word in everything]


def of_jobs(tasks: dict[str, dict[str, Any]], *job_ids: str) -> list[dict[str, Any]]:
    """The plan and chunk tasks of these jobs, found by their argument summaries."""
    shown = {f"job_id={j}" for j in job_ids} | {f"job_id={j}, chunk=0" for j in job_ids}
    return [t for t in tasks.values() if {args for args, _ in t["args"]} & shown]
