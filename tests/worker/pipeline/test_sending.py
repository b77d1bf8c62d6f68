"""One pass over a chunk (worker/pipeline/sending.py) on a real Valkey, with a fake
adapter: an exception that escapes a request never leaves another request
of the pass running after it, a request begins only under its pass's
lease, and a chunk deferred for rate-limit capacity comes back with jitter
and reads nothing while the account has none."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from producer import Producer
from producer.core import keys
from producer.core.store import StoredOutcome, decode_outcome, now_s
from producer.job import SendWindow
from producer.phone import parse_number, time_zones
from tests.producer.test_control import mark_running
from tests.worker.background.test_retention import ACCOUNT as RETENTION_ACCOUNT
from worker.dev.launcher import wait_until
from worker.ops.config import SettingsTable
from worker.ops.timing import Timing
from worker.pipeline.guards import AccountGuards
from worker.pipeline.rate_limit import Decision, Limits, RateLimiter
from worker.pipeline.send_window import Window, open_in_s
from worker.pipeline.sending import (
    DEFERRED_GRACE_S,
    NOT_DURABLE_RETRY_S,
    REQUESTS_IN_FLIGHT_PER_CHUNK,
    RETURNS_PER_SLOT,
    ChunkSender,
    PassResult,
    deferral_s,
    deferred_key,
    note_deferred,
)
from worker.providers.account import Account
from worker.providers.base import (
    Adapter,
    HttpRequest,
    JobContext,
    Recipient,
    RecipientResult,
    SendResult,
    Verdict,
)
from worker.runtime import Lane, Runtime
from worker.store import ResultsStore, new_token
from worker.tasks import _send_chunk

T = TypeVar("T")
TIMING = Timing.from_recovery(300)
ACCOUNT = replace(
    RETENTION_ACCOUNT,
    name="bulk",
    messages_per_second=100_000,
    requests_per_second=100_000,
    max_parts=10,
)
LATENCY_S = 0.05  # the fake provider's answer time: requests overlap


class FakeAdapter(Adapter):
    """One request per recipient; records every POST; ``raise_for`` indices
    make it raise what no adapter catches (a RecursionError, as from
    json.loads on a body nested 200,000 deep)."""

    kind = "fake"
    credential_keys = ()

    def __init__(self, account: Account, raise_for: frozenset[int] = frozenset()) -> None:
        super().__init__(account)
        self.raise_for = raise_for
        self.posts: list[int] = []

    def group(self, recipients: Sequence[Recipient]) -> list[list[Recipient]]:
        return [[recipient] for recipient in recipients]

    def build_request(self, batch: Sequence[Recipient], job: JobContext) -> HttpRequest:
        raise NotImplementedError

    def parse_response(
        self, batch: Sequence[Recipient], status: int, body: bytes
    ) -> SendResult | dict[int, RecipientResult]:
        raise NotImplementedError

    async def send(
        self, session: aiohttp.ClientSession, batch: Sequence[Recipient], job: JobContext
    ) -> SendResult:
        self.posts += [r.index for r in batch]
        await asyncio.sleep(LATENCY_S)
        if batch[0].index in self.raise_for:
            raise RecursionError("maximum recursion depth exceeded while decoding a JSON array")
        return SendResult(
            [RecipientResult(Verdict.ACCEPTED, provider_message_id=f"m{r.index}") for r in batch],
            http_status=200,
        )


class FailingCommits(ResultsStore):
    """A store whose commit of one recipient's request fails, as after
    Redis's retries ran out."""

    def __init__(self, client: aioredis.Redis, fail_for: int) -> None:
        super().__init__(client)
        self.fail_for = fail_for

    async def commit(
        self, job_id: str, chunk_no: int, outcomes: dict[int, StoredOutcome], *rest: Any
    ) -> str:
        if rest and rest[0] and self.fail_for in outcomes:  # a request's commit
            raise RedisConnectionError("Connection refused (after 10 retries)")
        return await super().commit(job_id, chunk_no, outcomes, *rest)


def personal_job(
    producer: Producer, count: int, policy: str = "at_most_once", priority: str = "normal"
) -> str:
    job_id = producer.submit(
        {
            "provider": "bulk",
            "delivery_policy": policy,
            "priority": priority,
            "messages": [{"to": f"07{20000000 + i}", "text": f"code {i}"} for i in range(count)],
        }
    )
    mark_running(producer.redis, job_id)
    return job_id


def on_valkey(redis_url: str, use: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        async with aioredis.Redis.from_url(redis_url) as client:
            return await use(client)

    return asyncio.run(main())


async def one_pass(
    store: ResultsStore,
    adapter: Adapter,
    job_id: str,
    limiter: RateLimiter | None = None,
    durable_ms: int = 0,
) -> PassResult:
    """A pass the way a task runs one: under the chunk's lease."""
    job = await store.job(job_id)
    assert job is not None
    token = new_token()
    assert await store.acquire_lease(job_id, 0, token, TIMING.lease_ttl_s)
    try:
        sender = ChunkSender(
            store,
            limiter or RateLimiter(store.redis),
            adapter,
            job,
            0,
            TIMING,
            lease_token=token,
            durable_ms=durable_ms,
        )
        return await sender.run(cast(aiohttp.ClientSession, None))
    finally:
        await store.release_lease(job_id, 0, token)


def outcomes(client: redis.Redis, job_id: str) -> dict[int, StoredOutcome]:
    raw = client.hgetall(keys.outcomes(job_id, 0))
    return {int(k): decode_outcome(v) for k, v in raw.items()}


def request_states(client: redis.Redis, job_id: str) -> Counter[str]:
    raw = client.hgetall(keys.requests(job_id, 0))
    return Counter(json.loads(v)["s"] for v in raw.values())


def tasks_left() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {cast(asyncio.Task[Any], asyncio.current_task())}


# --- an exception escaping a request ---------------------------------------------------


@pytest.mark.parametrize("policy", ["at_most_once", "at_least_once"])
def test_an_exception_from_the_adapter_is_that_requests_answer_and_the_pass_goes_on(
    producer: Producer, redis_url: str, policy: str
) -> None:
    job_id = personal_job(producer, 12, policy)
    adapter = FakeAdapter(ACCOUNT, raise_for=frozenset({3, 10}))

    async def scenario(client: aioredis.Redis) -> tuple[PassResult, set[asyncio.Task[Any]]]:
        result = await one_pass(ResultsStore(client), adapter, job_id)
        return result, tasks_left()

    result, left = on_valkey(redis_url, scenario)
    stored = outcomes(producer.redis, job_id)
    assert left == set()  # nothing of the pass is left on the loop
    assert sorted(adapter.posts) == list(range(12))  # each recipient posted once
    raised = {i: stored[i] for i in (3, 10)}
    assert all(
        o.error_code == "unreadable" and "RecursionError" in (o.error or "")
        for o in raised.values()
    )
    if policy == "at_most_once":
        assert result.chunk_done
        assert {o.status for o in raised.values()} == {"unknown"}
    else:  # sent again after the backoff, like any answer that was lost
        assert result.next_pass_in_s is not None
        assert {o.status for o in raised.values()} == {"pending"}
    assert all(stored[i].status == "accepted" for i in range(12) if i not in (3, 10))


def test_an_exception_outside_the_adapter_cancels_the_passes_other_requests(
    producer: Producer, redis_url: str
) -> None:
    job_id = personal_job(producer, 12)
    adapter = FakeAdapter(ACCOUNT)

    # The first request's commit fails: the other requests of its wave are
    # cut short and the later ones never begin, however slow Redis answers
    # (with a later request failing, a slow Redis let every other request
    # begin before it did).
    async def scenario(client: aioredis.Redis) -> tuple[int, set[asyncio.Task[Any]]]:
        with pytest.raises(RedisConnectionError):
            await one_pass(FailingCommits(client, fail_for=0), adapter, job_id)
        posted = len(adapter.posts)
        left = tasks_left()
        # Had a request outlived its pass, it would post now: give it the time.
        await asyncio.sleep(3 * LATENCY_S)
        assert len(adapter.posts) == posted
        return posted, left

    posted, left = on_valkey(redis_url, scenario)
    states = request_states(producer.redis, job_id)
    print(f"\nposted before the failure: {posted} of 12; request states after it: {dict(states)}")
    assert left == set()
    assert posted < 12
    # Requests never begun were forgotten; those cut short mid-POST (and the
    # one whose commit failed) stay `sending`, for the next pass to settle.
    assert states["pending"] == 0 and states["sending"] >= 1

    second = on_valkey(redis_url, lambda client: one_pass(ResultsStore(client), adapter, job_id))
    stored = outcomes(producer.redis, job_id)
    assert second.chunk_done
    assert max(Counter(adapter.posts).values()) == 1  # at_most_once: nobody posted twice
    assert sorted(adapter.posts) == list(range(12))
    unknown = {i for i, o in stored.items() if o.status == "unknown"}
    assert 0 in unknown and all(stored[i].error_code == "interrupted" for i in unknown)
    assert {o.status for i, o in stored.items() if i not in unknown} == {"accepted"}


# --- beginning a request ---------------------------------------------------------------


def test_a_request_begins_only_under_its_passes_lease_while_pending(
    producer: Producer, redis_url: str
) -> None:
    job_id = personal_job(producer, 1)
    client = producer.redis
    requests = keys.requests(job_id, 0)
    client.hset(
        requests, mapping={"r1": '{"s":"pending","i":[0]}', "r2": '{"s":"pending","i":[0]}'}
    )
    client.set(keys.lease(job_id, 0), "mine")
    sending = {"s": "sending", "a": 1, "t": 0, "k": "req-token", "i": [0]}

    def begin(request_id: str, token: str, state: dict[str, Any] = sending) -> str:
        return on_valkey(
            redis_url,
            lambda c: ResultsStore(c).begin_request(job_id, 0, request_id, state, token),
        )

    assert begin("r1", "theirs") == "lease"  # another pass holds the chunk
    assert begin("gone", "mine") == "taken"  # dropped by another pass
    assert begin("r1", "mine") == "begun"
    assert begin("r1", "mine", {**sending, "k": "other"}) == "taken"  # sending: never twice
    # The same begin again, as redis-py sends it when the reply was lost (a
    # Redis restart): it is still this request's own, once the lease is gone too.
    client.delete(keys.lease(job_id, 0))
    assert begin("r1", "mine") == "begun"
    client.set(keys.lease(job_id, 0), "mine")
    client.hset(requests, "r2", '{"s":"done","i":[0]}')
    assert begin("r2", "mine") == "taken"  # settled by someone else
    client.delete(keys.lease(job_id, 0))
    client.hset(requests, "r3", '{"s":"pending","i":[0]}')
    assert begin("r3", "mine") == "lease"  # the lease ran out
    client.set(keys.lease(job_id, 0), "mine")
    client.hset(keys.job(job_id), "state", "paused")
    assert begin("r3", "mine") == "stopped"
    assert b"req-token" in client.hget(requests, "r1")
    assert b"pending" in client.hget(requests, "r3")


# --- deferral for rate-limit capacity --------------------------------------------------


class FakeLimiter:
    """An account with capacity (``wait_s`` None) or without it for
    ``wait_s``; records the cost of every call, and whether it left high
    priority's reserve alone."""

    def __init__(self, wait_s: float | None) -> None:
        self.wait_s = wait_s
        self.costs: list[int] = []
        self.left_reserve: list[bool] = []

    async def try_acquire(
        self,
        account: str,
        limits: Limits,
        cost_parts: int,
        book_ahead_s: float = 0.0,
        unless_stopped: bool = False,
        leave_reserve: bool = False,
    ) -> Decision:
        self.costs.append(cost_parts)
        self.left_reserve.append(leave_reserve)
        if self.wait_s is None:
            return Decision(True, 0.0, 1.0)
        return Decision(False, self.wait_s, 1.0)


def test_deferral_is_spread_over_the_time_the_account_needs_for_its_waiting_chunks() -> None:
    rng = random.Random(1)
    cap_s = 96.0
    # Alone: back after the wait, plus up to a tenth of it.
    alone = [deferral_s(0.8, 0.5, 0, cap_s, rng) for _ in range(500)]
    assert min(alone) >= 0.8 and max(alone) <= 0.88 and max(alone) - min(alone) > 0.06
    # 60 others waiting, a request every 0.5 s: spread over 60 x 0.5 / 3 = 10 s.
    many = [deferral_s(0.3, 0.5, 60, cap_s, rng) for _ in range(500)]
    window_s = 60 * 0.5 / RETURNS_PER_SLOT
    assert min(many) >= 0.3 and max(many) <= 0.3 + window_s
    assert max(many) - min(many) > 0.9 * window_s  # spread, not one instant
    capped = [deferral_s(0.5, 1.0, 10_000, cap_s, rng) for _ in range(500)]
    assert max(capped) <= cap_s
    beyond = [deferral_s(500.0, 1.0, 0, cap_s, rng) for _ in range(500)]
    assert cap_s / 2 <= min(beyond) and max(beyond) <= cap_s


def test_deferred_chunks_are_counted_per_account_until_they_get_capacity(
    producer: Producer, redis_url: str
) -> None:
    async def scenario(client: aioredis.Redis) -> list[int]:
        counts = [await note_deferred(client, "bulk", "j", chunk, 10.0) for chunk in range(5)]
        counts.append(await note_deferred(client, "bulk", "j", 0, 10.0))  # again: not twice
        counts.append(await note_deferred(client, "other", "j", 0, 10.0))
        return counts

    assert on_valkey(redis_url, scenario) == [0, 1, 2, 3, 4, 4, 0]
    key = deferred_key("bulk")
    assert 0 < producer.redis.ttl(key) <= 10 + DEFERRED_GRACE_S + 1


def test_a_pass_without_capacity_defers_its_chunk_after_a_few_limiter_calls(
    producer: Producer, redis_url: str
) -> None:
    job_id = personal_job(producer, 40)
    adapter = FakeAdapter(ACCOUNT)
    limiter = FakeLimiter(wait_s=5.0)

    result = on_valkey(
        redis_url,
        lambda c: one_pass(ResultsStore(c), adapter, job_id, cast(RateLimiter, limiter)),
    )
    assert adapter.posts == []
    assert len(limiter.costs) <= REQUESTS_IN_FLIGHT_PER_CHUNK  # not one per request (40)
    assert result.deferred_parts == 1
    assert result.next_pass_in_s is not None and 5.0 <= result.next_pass_in_s <= 5.5
    assert request_states(producer.redis, job_id) == Counter()  # planned requests forgotten


@pytest.mark.parametrize("priority", ["normal", "high"])
def test_a_high_priority_pass_takes_the_reserve_and_comes_back_after_its_own_wait(
    producer: Producer, redis_url: str, priority: str
) -> None:
    # Sixty chunks of the account wait for capacity already: a normal chunk
    # comes back spread among them, a high one after its own wait.
    for chunk in range(60):
        producer.redis.zadd(deferred_key(ACCOUNT.name), {f"campaign:{chunk}": time.time() + 60})
    job_id = personal_job(producer, 40, priority=priority)
    limiter = FakeLimiter(wait_s=1.0)

    result = on_valkey(
        redis_url,
        lambda c: one_pass(
            ResultsStore(c), FakeAdapter(ACCOUNT), job_id, cast(RateLimiter, limiter)
        ),
    )
    high = priority == "high"
    assert limiter.left_reserve and set(limiter.left_reserve) == {not high}
    assert result.next_pass_in_s is not None
    if high:
        assert 1.0 <= result.next_pass_in_s <= 1.1
        assert producer.redis.zcard(deferred_key(ACCOUNT.name)) == 60  # not one of them
    else:
        assert producer.redis.zcard(deferred_key(ACCOUNT.name)) == 61


def test_a_deferred_chunk_reads_nothing_until_its_account_has_capacity(
    producer: Producer, redis_url: str
) -> None:
    job_id = personal_job(producer, 3)
    client = producer.redis
    block = client.get(keys.block(job_id, 0))
    client.delete(keys.block(job_id, 0))  # a pass that reads the chunk would fail
    adapter = FakeAdapter(ACCOUNT)
    limiter = FakeLimiter(wait_s=2.0)

    async def deferred_task(c: aioredis.Redis, parts: int) -> PassResult:
        store = ResultsStore(c)
        job = await store.job(job_id)
        assert job is not None
        runtime = SimpleNamespace(
            store=store,
            limiter=limiter,
            config=SimpleNamespace(accounts={"bulk": ACCOUNT}, settings=SettingsTable()),
            adapter=lambda account: adapter,
            account_for=lambda provider: ACCOUNT,
            route=lambda provider: None,
            guards=AccountGuards(),
            session=None,
        )
        return await _send_chunk(cast(Runtime, runtime), cast(Lane, runtime), job, 0, parts)

    again = on_valkey(redis_url, lambda c: deferred_task(c, 1))
    assert limiter.costs == [1] and adapter.posts == []
    assert again.deferred_parts == 1
    assert (
        again.next_pass_in_s is not None
        and 2.0 <= again.next_pass_in_s <= 2.2  # alone on its account
    )
    assert not client.exists(keys.lease(job_id, 0))  # given back

    # With capacity (taken by the check, and used by the first request) the pass runs.
    client.set(keys.block(job_id, 0), block)
    limiter.wait_s, limiter.costs = None, []
    done = on_valkey(redis_url, lambda c: deferred_task(c, 1))
    assert done.chunk_done and sorted(adapter.posts) == [0, 1, 2]
    assert limiter.costs == [1, 1, 1]  # the check paid for the first request: never twice


def test_a_pass_that_lost_its_lease_begins_no_further_request(
    producer: Producer, redis_url: str
) -> None:
    job_id = personal_job(producer, 12)
    client = producer.redis

    class LeaseTaken(FakeAdapter):
        async def send(
            self, session: aiohttp.ClientSession, batch: Sequence[Recipient], job: JobContext
        ) -> SendResult:
            if not self.posts:  # another pass takes the chunk (its lease ran out)
                client.set(keys.lease(job_id, 0), "another-pass")
            return await super().send(session, batch, job)

    adapter = LeaseTaken(ACCOUNT)
    result = on_valkey(redis_url, lambda c: one_pass(ResultsStore(c), adapter, job_id))
    assert result.lost and not result.chunk_done and result.next_pass_in_s is None
    # Only the requests begun before the lease changed hands were sent.
    assert len(adapter.posts) <= REQUESTS_IN_FLIGHT_PER_CHUNK
    assert client.get(keys.lease(job_id, 0)) == b"another-pass"  # not released by the loser


# --- durable_sends ---------------------------------------------------------------------


def waits_made(client: redis.Redis) -> tuple[int, ...]:
    stats = client.info("commandstats")
    return tuple(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("wait", "waitaof", "info"))


def test_without_durable_sends_a_pass_makes_no_durability_call(
    producer: Producer, redis_url: str
) -> None:
    job_id = personal_job(producer, 12)
    adapter = FakeAdapter(ACCOUNT)
    before = waits_made(producer.redis)
    on_valkey(redis_url, lambda c: one_pass(ResultsStore(c), adapter, job_id))
    wait, waitaof, info = waits_made(producer.redis)
    assert len(adapter.posts) == 12
    assert (wait, waitaof, info) == (before[0], before[1], before[2] + 1)  # +1: `before`'s


def test_with_durable_sends_a_request_whose_state_cannot_be_kept_is_not_sent(
    producer: Producer, redis_url: str
) -> None:
    job_id = personal_job(producer, 12)
    client = producer.redis
    assert (
        client.config_get("appendonly")["appendonly"] == "no"
        and not client.info("replication")["connected_slaves"]
    )
    adapter = FakeAdapter(ACCOUNT)

    def durable_pass() -> PassResult:
        return on_valkey(
            redis_url, lambda c: one_pass(ResultsStore(c), adapter, job_id, durable_ms=200)
        )

    result = durable_pass()
    assert adapter.posts == [] and not result.chunk_done
    assert result.next_pass_in_s == NOT_DURABLE_RETRY_S
    assert request_states(client, job_id) == Counter() and outcomes(client, job_id) == {}
    client.config_set("appendonly", "yes")  # WAITAOF 1 0 can be had now
    try:
        wait_until(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0, 10, "AOF")
        assert durable_pass().chunk_done
    finally:
        client.config_set("appendonly", "no")
    assert sorted(adapter.posts) == list(range(12))
    assert {o.status for o in outcomes(client, job_id).values()} == {"accepted"}


# --- send windows ----------------------------------------------------------------------

KENYA = [f"+2547120000{i:02d}" for i in range(3)]
NEW_YORK = [f"+121255500{i:02d}" for i in range(3)]


def nairobi_window(**extra: Any) -> dict[str, Any]:
    """A window open now in Nairobi for 30 minutes more (UTC+3 all year),
    so closed in New York (7 or 8 hours behind) for hours."""
    now = datetime.now(ZoneInfo("Africa/Nairobi"))
    start, end = now - timedelta(minutes=10), now + timedelta(minutes=30)
    return {"start": start.strftime("%H:%M"), "end": end.strftime("%H:%M"), **extra}


def window_job(producer: Producer, **settings: Any) -> str:
    job_id = producer.submit(
        {
            "provider": "bulk",
            "text": "reminder",
            "messages": [{"to": n} for n in KENYA + NEW_YORK],
            **settings,
        }
    )
    mark_running(producer.redis, job_id)
    return job_id


def test_a_pass_sends_the_recipients_inside_their_window_and_holds_the_others(
    producer: Producer, redis_url: str
) -> None:
    job_id = window_job(producer, send_window=nairobi_window())
    adapter = FakeAdapter(ACCOUNT)
    result = on_valkey(redis_url, lambda c: one_pass(ResultsStore(c), adapter, job_id))
    assert sorted(adapter.posts) == [0, 1, 2]  # Nairobi's
    stored = outcomes(producer.redis, job_id)
    assert all(stored[i].status == "accepted" for i in (0, 1, 2))
    assert all(i not in stored or stored[i].status == "pending" for i in (3, 4, 5))
    # Looked at again when New York's window opens: 6 h 50 to 8 h on.
    assert result.next_pass_in_s is not None and 6.5 * 3600 < result.next_pass_in_s < 8 * 3600
    assert not result.chunk_done


def test_a_held_recipient_whose_validity_ends_first_is_looked_at_then_and_expires(
    producer: Producer, redis_url: str
) -> None:
    job_id = window_job(producer, send_window=nairobi_window(), validity_minutes=1)
    adapter = FakeAdapter(ACCOUNT)
    result = on_valkey(redis_url, lambda c: one_pass(ResultsStore(c), adapter, job_id))
    assert sorted(adapter.posts) == [0, 1, 2]
    assert result.next_pass_in_s is not None and result.next_pass_in_s <= 61
    producer.redis.hset(keys.job(job_id), "created_at", repr(now_s() - 120))  # validity over
    result = on_valkey(redis_url, lambda c: one_pass(ResultsStore(c), adapter, job_id))
    assert sorted(adapter.posts) == [0, 1, 2]  # never sent late
    stored = outcomes(producer.redis, job_id)
    assert [stored[i].status for i in (3, 4, 5)] == ["expired"] * 3
    assert result.chunk_done


def test_a_window_in_one_zone_for_everyone_and_an_accounts_default_window(
    producer: Producer, redis_url: str
) -> None:
    job_id = window_job(producer, send_window=nairobi_window(timezone="Africa/Nairobi"))
    adapter = FakeAdapter(ACCOUNT)
    result = on_valkey(redis_url, lambda c: one_pass(ResultsStore(c), adapter, job_id))
    assert sorted(adapter.posts) == list(range(6)) and result.chunk_done
    # No window on the job: the account's.
    job_id = window_job(producer)
    windowed = replace(ACCOUNT, send_window=SendWindow.model_validate(nairobi_window()))
    adapter = FakeAdapter(windowed)
    result = on_valkey(redis_url, lambda c: one_pass(ResultsStore(c), adapter, job_id))
    assert sorted(adapter.posts) == [0, 1, 2] and not result.chunk_done


def test_a_number_whose_zones_disagree_waits_until_the_window_is_open_in_all(
    producer: Producer, redis_url: str
) -> None:
    """A Russian mobile number may be in any of Russia's zones (UTC+2 to
    UTC+12): 09:00-20:00 is open in all of them only from 07:00 to 08:00 UTC."""
    russian = parse_number("+79161234567", "RO")
    zones = time_zones(russian)
    assert len(zones) > 10
    job_id = producer.submit(
        {
            "provider": "bulk",
            "text": "reminder",
            "send_window": {"start": "09:00", "end": "20:00"},
            "messages": [{"to": russian.e164}],
        }
    )
    mark_running(producer.redis, job_id)
    adapter = FakeAdapter(ACCOUNT)
    now = datetime.now(UTC)
    result = on_valkey(redis_url, lambda c: one_pass(ResultsStore(c), adapter, job_id))
    expected = open_in_s(Window(9 * 60, 20 * 60), zones, now)
    assert expected is not None
    if expected == 0.0:  # 07:00-08:00 UTC: open in every zone
        assert adapter.posts == [0] and result.chunk_done
        return
    assert adapter.posts == []  # open in Moscow, say, but not in all its zones
    opens_at = (now + timedelta(seconds=expected)).astimezone(UTC)
    assert opens_at.hour == 7 and opens_at.minute == 0
    assert result.next_pass_in_s == pytest.approx(expected, abs=5)
