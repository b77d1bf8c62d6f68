"""Job control, opt-outs and callbacks (issue 5) through a real Valkey, the
sandbox and real worker processes.

What is checked is what an operator or a receiving application sees: the
sandbox's record of what it was sent (and when), the job's status and
outcome records, the provider request states the workers keep in Redis
(``st`` = when a request started), the ``smsbulk`` command's stdout and exit
codes, and the HTTP requests a local receiver gets. Every wait is on a
condition with a time limit; every process started here is stopped here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from aiohttp import web

from producer import JobStateConflict, Producer
from producer.core import keys
from producer.job import JobStatus, Outcome
from tests.integration.stack import Stack, make_stack, ro_numbers
from worker.dev.launcher import free_port, smsbulk_argv, wait_until

pytestmark = pytest.mark.integration

SECRET = "callback-secret-for-tests"
WORKERS = 2
# One request per chunk (chunk size = batch size), 100 recipients a second:
# with the sandbox's latency, a job of a few hundred runs long enough to act on.
SLOW = {"batch_size": 10, "messages_per_second": 100, "requests_per_second": 10}
# One recipient per request; two attempts, almost no backoff.
FLAKY = {
    "batch_size": 1,
    "messages_per_second": 100_000,
    "requests_per_second": 1000,
    "max_attempts": 2,
    "retry_base_s": 0.05,
    "retry_max_s": 0.2,
    # Retries alone, without the circuit (which has tests of its own).
    "failover_after_failures": 1_000_000,
}


@pytest.fixture(scope="module")
def stack(valkey: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    url = valkey.connection_url  # type: ignore[attr-defined]
    redis.Redis.from_url(url).flushall()
    built = make_stack(
        url,
        tmp_path_factory.mktemp("job-control"),
        workers=0,  # started once the callback secret is in their environment
        accounts={"slow": SLOW, "flaky": FLAKY},
        # The callback receiver is http on 127.0.0.1 (docs/INTERFACE.md "Input limits").
        settings_toml="\n[settings]\ncallback_allow_http = true\n",
    )
    try:
        built.env["SMSBULK_CALLBACK_SECRET"] = SECRET
        for _ in range(WORKERS):
            built.add_worker()
        yield built
    finally:
        built.stop()


@pytest.fixture
def client(stack: Stack) -> Iterator[redis.Redis]:
    connection = stack.redis()
    yield connection
    connection.close()


@pytest.fixture
def producer(stack: Stack) -> Iterator[Producer]:
    connection = stack.producer()
    yield connection
    connection.close()


@pytest.fixture(autouse=True)
def clean_sandbox(stack: Stack) -> None:
    stack.sandbox_post("/_sandbox/reset")
    stack.sandbox_post("/_sandbox/settings", {"latency_ms": 0, "fail_rate": 0, "seed": None})


# --- helpers ------------------------------------------------------------------------


def job(provider: str, numbers: list[str], **fields: Any) -> dict[str, Any]:
    return {
        "provider": provider,
        "text": "Your order has shipped.",
        "messages": [{"to": n} for n in numbers],
        **fields,
    }


def in_s(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def accepted(client: redis.Redis, job_id: str) -> int:
    return int(client.hget(keys.job(job_id), "n:a") or 0)


def request_states(client: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    """Every provider request state the workers recorded for the job."""
    return [
        json.loads(raw)
        for key in client.scan_iter(f"{keys.PREFIX}:job:{job_id}:r:*")
        for raw in client.hvals(key)
    ]


def in_flight(
    client: redis.Redis, job_id: str, begun_within_s: float | None = None
) -> list[dict[str, Any]]:
    """The job's requests in flight; only those begun `begun_within_s` ago or less."""
    now = time.time()
    return [
        r
        for r in request_states(client, job_id)
        if r["s"] == "sending" and (begun_within_s is None or now - r["t"] <= begun_within_s)
    ]


def leased_chunks(client: redis.Redis, job_id: str) -> list[bytes]:
    return list(client.scan_iter(f"{keys.PREFIX}:job:{job_id}:lease:*"))


def quiet(client: redis.Redis, job_id: str) -> bool:
    """No request of the job in flight and no worker holding one of its chunks."""
    return not in_flight(client, job_id) and not leased_chunks(client, job_id)


def sent_numbers(stack: Stack) -> Counter[str]:
    return Counter(row["number"] for row in stack.sandbox_get("/_sandbox/sent"))


def numbers_with(outcomes: list[Outcome], status: str) -> Counter[str]:
    """The sandbox's form of the numbers ("digits": E.164 without the +)."""
    return Counter(o.e164[1:] for o in outcomes if o.status == status and o.e164)


def stays(condition: Callable[[], bool], duration_s: float, what: str) -> None:
    """`condition` holds throughout `duration_s` (checked every 0.1 s)."""
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        assert condition(), what
        time.sleep(0.1)


def ended_and_settled(producer: Producer, job_id: str) -> Callable[[], bool]:
    def check() -> bool:
        status = producer.status(job_id)
        return status.state in ("completed", "cancelled") and status.counts["pending"] == 0

    return check


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        smsbulk_argv(*args), env=stack.env, capture_output=True, text=True, timeout=60, check=False
    )


def kill_every_worker(stack: Stack) -> None:
    for worker in stack.workers:
        worker.kill_group(signal.SIGKILL)
    for worker in stack.workers:
        wait_until(lambda: not worker.alive(), 10, f"{worker.name} to die")  # noqa: B023
        worker.stop()  # closes its log
    stack.workers.clear()


# --- 1. cancel ----------------------------------------------------------------------


def test_cancel_mid_run_lets_requests_in_flight_finish_and_sends_nothing_after(
    stack: Stack, client: redis.Redis, producer: Producer
) -> None:
    stack.sandbox_post("/_sandbox/settings", {"latency_ms": 500})
    total = 600
    job_id = producer.submit(job("slow", ro_numbers(total)))
    wait_until(lambda: accepted(client, job_id) >= 100, 60, "100 recipients sent")
    # Begun under half the latency ago: still in flight when the cancel returns.
    wait_until(lambda: bool(in_flight(client, job_id, begun_within_s=0.25)), 10, "a new request")

    status = producer.cancel(job_id)
    cancel_returned_s = time.time()
    flying = in_flight(client, job_id)  # started before the cancel; they finish
    assert status.state == "cancelled" and status.finished_at is not None

    wait_until(ended_and_settled(producer, job_id), 60, "every recipient final")
    wait_until(lambda: quiet(client, job_id), 30, "requests in flight to end")
    final = producer.status(job_id)
    outcomes = list(producer.results(job_id))
    assert final.state == "cancelled" and final.finished_at == status.finished_at
    counts = final.counts
    assert counts["pending"] == 0 and counts["unknown"] == counts["failed"] == 0
    assert counts["accepted"] >= 100 and counts["cancelled"] > 0
    assert counts["accepted"] + counts["cancelled"] == total

    # Requests in flight at the cancel finished and were recorded.
    assert flying, "no request was in flight at the cancel"
    for request in flying:
        assert {outcomes[i].status for i in request["i"]} == {"accepted"}
    # No request started after the cancel returned.
    requests = request_states(client, job_id)
    assert requests and all(r["s"] == "done" and "interrupted" not in r for r in requests)
    late = [r for r in requests if r["st"] >= cancel_returned_s]
    assert not late, f"{len(late)} requests started after the cancel returned"
    # The provider got exactly the accepted recipients, each once.
    stats = stack.sandbox_get("/_sandbox/stats")
    assert stats["items"] == counts["accepted"] and stats["duplicates"] == 0
    assert sent_numbers(stack) == numbers_with(outcomes, "accepted")
    cancelled = [o for o in outcomes if o.status == "cancelled"]
    assert all(o.attempts == 0 and o.error == "the job was cancelled" for o in cancelled)
    # Chunk tasks still queued or deferred find the job cancelled.
    stays(
        lambda: stack.sandbox_get("/_sandbox/stats")["items"] == counts["accepted"],
        2,
        "the sandbox was sent more after the cancel",
    )


def test_a_scheduled_job_cancelled_before_its_release_sends_nothing(
    stack: Stack, client: redis.Redis, producer: Producer
) -> None:
    job_id = producer.submit(job("bulk", ro_numbers(30), schedule_at=in_s(60)))
    assert producer.status(job_id).state == "scheduled"
    assert client.zscore(keys.SCHEDULED, job_id) is not None

    assert producer.cancel(job_id).state == "cancelled"
    wait_until(ended_and_settled(producer, job_id), 30, "every recipient cancelled")
    status = producer.status(job_id)
    assert status.state == "cancelled" and status.counts["cancelled"] == 30
    assert {o.status for o in producer.results(job_id)} == {"cancelled"}
    assert client.zscore(keys.SCHEDULED, job_id) is None
    assert stack.sandbox_get("/_sandbox/stats")["requests"] == 0


# --- 2. pause / resume --------------------------------------------------------------


def test_pause_survives_killing_every_worker_and_resume_sends_each_recipient_once(
    stack: Stack, client: redis.Redis, producer: Producer
) -> None:
    stack.sandbox_post("/_sandbox/settings", {"latency_ms": 300})
    total = 600
    running = producer.submit(job("slow", ro_numbers(total)))
    wait_until(lambda: accepted(client, running) >= 100, 60, "100 recipients sent")

    assert producer.pause(running).state == "paused"
    pause_returned_s = time.time()
    wait_until(lambda: quiet(client, running), 30, "requests in flight to end")
    # Requests in flight at the pause finished; none started after it returned.
    requests = request_states(client, running)
    assert all(r["s"] == "done" and r["st"] < pause_returned_s for r in requests)
    sent_before = accepted(client, running)
    assert 100 <= sent_before < total
    assert stack.sandbox_get("/_sandbox/stats")["items"] == sent_before

    kill_every_worker(stack)
    # With no worker alive: a job paused before its plan ran, and a scheduled
    # job paused before its time (due in two seconds).
    unplanned = producer.submit(job("slow", ro_numbers(40, start=1000)))
    assert producer.pause(unplanned).state == "paused"
    scheduled = producer.submit(job("bulk", ro_numbers(20, start=2000), schedule_at=in_s(2)))
    schedule_s = client.zscore(keys.SCHEDULED, scheduled)
    assert schedule_s is not None
    assert producer.pause(scheduled).state == "paused"

    for _ in range(WORKERS):
        stack.add_worker()
    # The new workers take what waits on the queue (the unplanned job's plan,
    # chunks of the paused one); once the scheduled job is due they look at it,
    # find it paused and put it off (its score moves a minute on).
    wait_until(lambda: client.llen(keys.NORMAL_QUEUE) == 0, 60, "the workers to take the queue")
    wait_until(
        lambda: (client.zscore(keys.SCHEDULED, scheduled) or 0) > schedule_s + 10,
        30,
        "the workers to look at the scheduled job",
    )
    jobs = (running, unplanned, scheduled)

    def still_paused() -> bool:
        states = {producer.status(job_id).state for job_id in jobs}
        return states == {"paused"} and stack.sandbox_get("/_sandbox/stats")["items"] == sent_before

    stays(still_paused, 3, "a paused job sent something")

    assert producer.resume(running).state == "queued"
    assert producer.resume(unplanned).state == "queued"
    assert producer.resume(scheduled).state == "scheduled"  # due now: released by the workers
    # The scheduled job is past its time: released within the workers' poll.
    for job_id, size, timeout_s in ((scheduled, 20, 10), (running, total, 60), (unplanned, 40, 60)):
        status = stack.wait_for(job_id, timeout_s)
        assert status.state == "completed" and status.counts["accepted"] == size

    stats = stack.sandbox_get("/_sandbox/stats")
    assert stats["duplicates"] == 0 and stats["items"] == total + 60
    everything = [o for job_id in jobs for o in producer.results(job_id)]
    assert sent_numbers(stack) == numbers_with(everything, "accepted")
    assert all(o.attempts == 1 for o in everything)


# --- 3. retry -----------------------------------------------------------------------


def test_retry_sends_only_the_failed_recipients_again_as_new_attempts(
    stack: Stack, client: redis.Redis, producer: Producer
) -> None:
    # Half of the provider's answers are 500s: with two attempts each, some
    # recipients end failed and the others accepted.
    stack.sandbox_post("/_sandbox/settings", {"fail_rate": 0.5, "seed": 5})
    numbers = ro_numbers(40, start=3000)
    job_id = producer.submit(job("flaky", [*numbers, "12", "not a number"]))
    first = stack.wait_for(job_id, 60)
    assert first.state == "completed" and first.counts["rejected"] == 2
    assert first.counts["failed"] > 0 and first.counts["accepted"] > 0
    before = list(producer.results(job_id))
    failed = [o for o in before if o.status == "failed"]
    assert all(o.attempts == 2 and "gave up after 2 attempts" in (o.error or "") for o in failed)

    # Only an ended job can be retried; only final statuses can be asked for.
    stack.sandbox_post("/_sandbox/settings", {"fail_rate": 0, "latency_ms": 300})
    busy = producer.submit(job("slow", ro_numbers(1000, start=4000)))
    wait_until(lambda: producer.status(busy).state == "running", 30, "the job to run")
    with pytest.raises(JobStateConflict, match="job is running"):
        producer.retry(busy, ["failed"])
    answer = cli(stack, "retry", busy, "--status", "failed")
    assert answer.returncode == 1 and answer.stdout == ""
    assert "job is running" in answer.stderr
    answer = cli(stack, "retry", busy, "--status", "failed,bogus")
    assert answer.returncode == 2 and answer.stdout == "" and "bogus" in answer.stderr
    producer.cancel(busy)
    wait_until(ended_and_settled(producer, busy), 60, "the busy job to be cancelled")

    stack.sandbox_post("/_sandbox/reset")
    stack.sandbox_post("/_sandbox/settings", {"latency_ms": 0})
    status = producer.retry(job_id, ["failed"])
    assert status.state == "queued" and status.counts["pending"] == len(failed)
    assert status.counts["failed"] == 0
    after = stack.wait_for(job_id, 60)
    assert after.state == "completed"
    assert after.counts["accepted"] == first.counts["accepted"] + len(failed)
    assert after.counts["rejected"] == 2

    # Exactly the failed recipients were sent again, each once; they are
    # accepted at their first attempt of the retry.
    assert sent_numbers(stack) == numbers_with(failed, "failed")
    results = list(producer.results(job_id))
    for old, new in zip(before, results, strict=True):
        if old.status == "failed":
            assert new.status == "accepted" and new.attempts == 1
            assert new.provider_message_id and new.error is None
        else:
            assert new == old

    # A completed job cannot be cancelled, paused or resumed.
    for verb in ("cancel", "pause", "resume"):
        with pytest.raises(JobStateConflict, match="job is completed"):
            getattr(producer, verb)(job_id)
        answer = cli(stack, verb, job_id)
        assert answer.returncode == 1 and answer.stdout == ""
        assert "job is completed" in answer.stderr
    # Nothing failed any more: a retry leaves the job as it is and sends nothing.
    answer = cli(stack, "retry", job_id, "--status", "failed")
    assert answer.returncode == 0
    assert json.loads(answer.stdout)["state"] == "completed"
    assert producer.status(job_id) == after
    assert stack.sandbox_get("/_sandbox/stats")["requests"] == len(failed)


# --- 4. opt-outs --------------------------------------------------------------------


def test_opt_outs_from_the_command_line_are_honoured_at_send_time(
    stack: Stack, producer: Producer
) -> None:
    answer = cli(stack, "optout", "add", "--region", "RO", "0712345678")
    assert (answer.returncode, answer.stdout) == (0, "+40712345678\n")
    assert cli(stack, "optout", "list").stdout == "+40712345678\n"
    answer = cli(stack, "optout", "add", "+40 722 123 456", "0040733123456")
    assert answer.returncode == 0
    assert answer.stdout.split() == ["+40712345678", "+40722123456", "+40733123456"]
    answer = cli(stack, "optout", "add", "0744123456")
    assert answer.returncode == 2 and answer.stdout == "" and "--region" in answer.stderr
    assert len(cli(stack, "optout", "list").stdout.split()) == 3

    # A number opted out while its job waits for its schedule is never sent.
    job_id = producer.submit(
        job("bulk", ["0755123456", "0712345678", "0766123456"], schedule_at=in_s(8))
    )
    assert cli(stack, "optout", "add", "--region", "RO", "0755123456").returncode == 0
    assert producer.status(job_id).state == "scheduled", "the job left before the opt-out"
    status = stack.wait_for(job_id, 60)
    assert status.counts["rejected"] == 2 and status.counts["accepted"] == 1
    outcomes = list(producer.results(job_id))
    for outcome in outcomes[:2]:
        assert (outcome.status, outcome.error, outcome.attempts) == ("rejected", "opted out", 0)
    assert outcomes[0].e164 == "+40755123456"
    assert sent_numbers(stack) == Counter(["40766123456"])

    # Removed numbers are sent to again.
    answer = cli(stack, "optout", "remove", "--region", "RO", "0712345678", "0755123456")
    assert answer.returncode == 0 and answer.stdout.split() == ["+40722123456", "+40733123456"]
    answer = cli(stack, "optout", "remove", "+40722123456", "0040733123456")
    assert (answer.returncode, answer.stdout) == (0, "")
    again = producer.submit(job("bulk", ["0712345678"]))
    assert stack.wait_for(again, 60).counts["accepted"] == 1


# --- 5. callbacks -------------------------------------------------------------------


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    at_s: float


@dataclass
class Receiver:
    """A local HTTP receiver: answers each path's deliveries from a script
    (then 200), and records every one."""

    answers: dict[str, list[int]]
    port: int = field(default_factory=free_port)
    deliveries: list[Delivery] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    _ready: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def to(self, path: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        with self._lock:
            self.deliveries.append(Delivery(path, dict(request.headers), body, time.time()))
            script = self.answers.get(path, [])
            status = script.pop(0) if script else 200
        return web.Response(status=status, text="ok" if status == 200 else "try again")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{path}", self._handle)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def __enter__(self) -> Receiver:
        self._thread = threading.Thread(target=self._serve, name="callback-receiver")
        self._thread.start()
        assert self._ready.wait(10), "the receiver did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def assert_signed_status(delivery: Delivery, status: JobStatus) -> None:
    expected = "sha256=" + hmac.new(SECRET.encode(), delivery.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(delivery.headers["X-Smsbulk-Signature"], expected)
    assert delivery.headers["Content-Type"].startswith("application/json")
    assert json.loads(delivery.body) == status.model_dump(mode="json")


def test_callbacks_are_signed_retried_and_sent_for_completed_and_cancelled_jobs(
    stack: Stack, client: redis.Redis, producer: Producer
) -> None:
    with Receiver({"completed": [500, 500, 200]}) as receiver:
        done = producer.submit(job("bulk", ro_numbers(20), callback_url=receiver.url("completed")))
        wait_until(lambda: len(receiver.to("completed")) >= 3, 60, "three deliveries")
        deliveries = receiver.to("completed")
        status = producer.status(done)
        assert status.state == "completed" and status.counts["accepted"] == 20
        for delivery in deliveries:
            assert_signed_status(delivery, status)
        # Backoff between attempts: 2 s, then 4 s.
        gaps = [b.at_s - a.at_s for a, b in zip(deliveries, deliveries[1:], strict=False)]
        assert gaps[0] >= 1.5 and gaps[1] >= 3.5, gaps

        stack.sandbox_post("/_sandbox/settings", {"latency_ms": 300})
        cancelled = producer.submit(
            job("slow", ro_numbers(300, start=5000), callback_url=receiver.url("cancelled"))
        )
        wait_until(lambda: accepted(client, cancelled) >= 30, 60, "30 recipients sent")
        producer.cancel(cancelled)
        wait_until(lambda: len(receiver.to("cancelled")) >= 1, 60, "the cancelled job's callback")
        wait_until(ended_and_settled(producer, cancelled), 30, "every recipient final")
        status = producer.status(cancelled)
        assert status.state == "cancelled" and status.counts["pending"] == 0
        (delivery,) = receiver.to("cancelled")
        assert_signed_status(delivery, status)

        # Each job's end is reported once.
        stays(
            lambda: len(receiver.to("completed")) == 3 and len(receiver.to("cancelled")) == 1,
            2,
            "a callback was delivered again",
        )
