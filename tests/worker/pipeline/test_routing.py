"""A route job's pass (worker/pipeline/sending.py, recipients.route) on a real
Valkey, with fake adapters: each recipient goes to the account its number's
country picks, requests never mix accounts, and a recipient moves on to the
next account of its list only while it provably was not accepted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import cast

import aiohttp
import redis.asyncio as aioredis

from producer import Producer
from producer.core import keys
from producer.core.store import iter_outcomes
from producer.routes import Route
from tests.producer.test_control import mark_running
from tests.worker.pipeline.test_sending import ACCOUNT, TIMING, FakeAdapter, on_valkey, outcomes
from worker.pipeline.circuit import Circuits
from worker.pipeline.daily_cap import DailyCaps
from worker.pipeline.guards import AccountGuards
from worker.pipeline.rate_limit import RateLimiter
from worker.pipeline.sending import ChunkSender, PassResult
from worker.providers.account import Account
from worker.providers.base import JobContext, Recipient, RecipientResult, SendResult, Verdict
from worker.store import ResultsStore, new_token

RO = replace(ACCOUNT, name="ro", max_attempts=2)
KE = replace(ACCOUNT, name="ke", default_region="KE", max_attempts=2)
BACKUP = replace(ACCOUNT, name="backup", max_attempts=2)
WORLD = Route("world", "RO", ("ro", "backup"), {"KE": ("ke", "backup")})


class Answering(FakeAdapter):
    """A fake provider that answers every recipient with one verdict."""

    def __init__(self, account: Account, verdict: Verdict, http_status: int = 200) -> None:
        super().__init__(account)
        self.verdict, self.http_status = verdict, http_status

    def group(self, recipients: Sequence[Recipient]) -> list[list[Recipient]]:
        return [list(recipients)]  # one request for the chunk's share

    async def send(
        self, session: aiohttp.ClientSession, batch: Sequence[Recipient], job: JobContext
    ) -> SendResult:
        self.posts += [r.index for r in batch]
        await asyncio.sleep(0)
        return SendResult(
            [RecipientResult(self.verdict, error="said so") for _ in batch],
            http_status=self.http_status,
        )


def accepting(account: Account) -> Answering:
    return Answering(account, Verdict.ACCEPTED)


def route_job(
    producer: Producer, numbers: list[str], policy: str = "at_most_once", **settings: object
) -> str:
    job_id = producer.submit(
        {
            "provider": "bulk",  # the pass is handed its route (tests of the pass alone)
            "delivery_policy": policy,
            "text": "hi",
            "messages": [{"to": number} for number in numbers],
            **settings,
        }
    )
    mark_running(producer.redis, job_id)
    return job_id


async def passes(
    client: aioredis.Redis,
    adapters: dict[str, FakeAdapter],
    job_id: str,
    most: int = 10,
    guards: AccountGuards | None = None,
) -> list[PassResult]:
    """Passes over chunk 0 until nothing is left (retry waits skipped);
    without ``guards``, every account can always send."""
    store = ResultsStore(client)
    results = []
    for _ in range(most):
        job = await store.job(job_id)
        assert job is not None
        token = new_token()
        assert await store.acquire_lease(job_id, 0, token, TIMING.lease_ttl_s)
        try:
            sender = ChunkSender(
                store,
                RateLimiter(client),
                adapters[WORLD.accounts[0]],
                job,
                0,
                TIMING,
                lease_token=token,
                route=WORLD,
                adapters=adapters,
                guards=guards,
            )
            result = await sender.run(cast(aiohttp.ClientSession, None))
        finally:
            await store.release_lease(job_id, 0, token)
        results.append(result)
        if result.next_pass_in_s is None:
            break
    return results


RO_NUMBERS = [f"07{20000000 + i}" for i in range(5)]
KE_NUMBERS = [f"+2547{12000000 + i}" for i in range(3)]


def test_each_recipient_goes_to_its_countrys_account_and_is_counted_there(
    producer: Producer, redis_url: str
) -> None:
    job_id = route_job(producer, RO_NUMBERS + KE_NUMBERS)
    adapters: dict[str, FakeAdapter] = {a.name: accepting(a) for a in (RO, KE, BACKUP)}
    on_valkey(redis_url, lambda client: passes(client, adapters, job_id))
    assert sorted(adapters["ro"].posts) == [0, 1, 2, 3, 4]
    assert sorted(adapters["ke"].posts) == [5, 6, 7]
    assert adapters["backup"].posts == []
    records = list(iter_outcomes(producer.redis, job_id))
    assert [r.provider for r in records] == ["ro"] * 5 + ["ke"] * 3
    assert all(r.status == "accepted" and r.attempts == 1 for r in records)
    fields = producer.redis.hgetall(keys.job(job_id))
    assert fields[b"a:ro:a"] == b"5" and fields[b"a:ke:a"] == b"3"
    assert producer.status(job_id).state == "completed"


def test_not_sent_on_the_first_account_moves_on_and_is_sent_once(
    producer: Producer, redis_url: str
) -> None:
    job_id = route_job(producer, RO_NUMBERS)
    down = Answering(RO, Verdict.RETRY, http_status=503)
    adapters: dict[str, FakeAdapter] = {
        "ro": down,
        "ke": accepting(KE),
        "backup": accepting(BACKUP),
    }
    on_valkey(redis_url, lambda client: passes(client, adapters, job_id))
    # Two attempts on ro (its max_attempts), then one on backup.
    assert sorted(down.posts) == sorted(list(range(5)) * 2)
    assert sorted(adapters["backup"].posts) == list(range(5))
    records = list(iter_outcomes(producer.redis, job_id))
    assert all(r.status == "accepted" and r.provider == "backup" for r in records)
    assert all(r.attempts == 3 for r in records)  # attempts count every account's
    fields = producer.redis.hgetall(keys.job(job_id))
    assert fields[b"a:backup:a"] == b"5" and b"a:ro:f" not in fields


def test_refused_permanently_moves_on_and_failed_only_after_the_last_account(
    producer: Producer, redis_url: str
) -> None:
    job_id = route_job(producer, RO_NUMBERS[:2])
    adapters: dict[str, FakeAdapter] = {
        "ro": Answering(RO, Verdict.FAILED),
        "ke": accepting(KE),
        "backup": Answering(BACKUP, Verdict.FAILED),
    }
    on_valkey(redis_url, lambda client: passes(client, adapters, job_id))
    assert sorted(adapters["ro"].posts) == [0, 1] and sorted(adapters["backup"].posts) == [0, 1]
    records = list(iter_outcomes(producer.redis, job_id))
    assert all(r.status == "failed" and r.provider == "backup" for r in records)
    assert all(r.error == "said so" for r in records)  # the last account's error


def test_an_answer_that_may_have_been_a_send_never_moves_on(
    producer: Producer, redis_url: str
) -> None:
    job_id = route_job(producer, RO_NUMBERS[:3])
    adapters: dict[str, FakeAdapter] = {
        "ro": Answering(RO, Verdict.UNCERTAIN, http_status=200),
        "ke": accepting(KE),
        "backup": accepting(BACKUP),
    }
    on_valkey(redis_url, lambda client: passes(client, adapters, job_id))
    assert adapters["backup"].posts == []
    stored = outcomes(producer.redis, job_id)
    assert {o.status for o in stored.values()} == {"unknown"}
    assert {o.account for o in stored.values()} == {"ro"}


def test_a_stopped_account_is_skipped_without_an_attempt(
    producer: Producer, redis_url: str
) -> None:
    job_id = route_job(producer, RO_NUMBERS[:3])
    producer.redis.set(keys.account_block("ro"), "account ro stopped: bad credentials")
    adapters: dict[str, FakeAdapter] = {a.name: accepting(a) for a in (RO, KE, BACKUP)}
    on_valkey(redis_url, lambda client: passes(client, adapters, job_id))
    assert adapters["ro"].posts == [] and sorted(adapters["backup"].posts) == [0, 1, 2]
    records = list(iter_outcomes(producer.redis, job_id))
    assert all(
        r.status == "accepted" and r.provider == "backup" and r.attempts == 1 for r in records
    )


def test_a_stopped_last_account_fails_its_recipients_with_its_reason(
    producer: Producer, redis_url: str
) -> None:
    job_id = route_job(producer, KE_NUMBERS[:2])
    for name in ("ke", "backup"):
        producer.redis.set(keys.account_block(name), f"account {name} stopped")
    adapters: dict[str, FakeAdapter] = {a.name: accepting(a) for a in (RO, KE, BACKUP)}
    on_valkey(redis_url, lambda client: passes(client, adapters, job_id))
    records = list(iter_outcomes(producer.redis, job_id))
    assert all(r.status == "failed" and r.error == "account backup stopped" for r in records)
    assert all(a.posts == [] for a in adapters.values())


async def guarded_passes(
    client: aioredis.Redis, adapters: dict[str, FakeAdapter], job_id: str, most: int = 12
) -> list[PassResult]:
    """``passes`` with the real circuits and daily caps (shared in Redis)."""
    guards = AccountGuards(Circuits(client), DailyCaps(client))
    return await passes(client, adapters, job_id, most, guards)


def test_an_open_circuit_moves_recipients_on_at_once(producer: Producer, redis_url: str) -> None:
    job_id = route_job(producer, RO_NUMBERS)
    patient = replace(RO, max_attempts=50, failover_after_failures=2, failover_cooldown_s=30)
    down = Answering(patient, Verdict.RETRY, http_status=503)
    adapters: dict[str, FakeAdapter] = {
        "ro": down,
        "ke": accepting(KE),
        "backup": accepting(BACKUP),
    }
    on_valkey(redis_url, lambda client: guarded_passes(client, adapters, job_id))
    # Two failed requests open ro's circuit; then everyone moves to backup
    # without waiting out ro's 50 attempts.
    assert sorted(down.posts) == sorted(list(range(5)) * 2)
    assert sorted(adapters["backup"].posts) == list(range(5))
    assert producer.redis.hget(keys.circuit("ro"), "open_until") is not None
    records = list(iter_outcomes(producer.redis, job_id))
    assert all(r.status == "accepted" and r.provider == "backup" for r in records)


def test_a_daily_cap_reached_moves_recipients_on(producer: Producer, redis_url: str) -> None:
    job_id = route_job(producer, RO_NUMBERS)  # one request of 5 parts on ro
    capped = replace(RO, daily_max_parts=3)
    adapters: dict[str, FakeAdapter] = {
        "ro": accepting(capped),
        "ke": accepting(KE),
        "backup": accepting(BACKUP),
    }
    on_valkey(redis_url, lambda client: guarded_passes(client, adapters, job_id))
    assert adapters["ro"].posts == [] and sorted(adapters["backup"].posts) == list(range(5))
    records = list(iter_outcomes(producer.redis, job_id))
    assert all(
        r.status == "accepted" and r.provider == "backup" and r.attempts == 1 for r in records
    )


def test_a_daily_cap_reached_on_the_last_account_holds_its_recipients(
    producer: Producer, redis_url: str
) -> None:
    job_id = route_job(producer, KE_NUMBERS[:2])
    adapters: dict[str, FakeAdapter] = {
        "ro": accepting(RO),
        "ke": accepting(replace(KE, daily_max_parts=1)),
        "backup": accepting(replace(BACKUP, daily_max_parts=1)),
    }
    results = on_valkey(redis_url, lambda client: guarded_passes(client, adapters, job_id, most=3))
    assert all(a.posts == [] for a in adapters.values())
    assert all(o.status == "pending" for o in outcomes(producer.redis, job_id).values())
    # They wait for the cap's reset at 00:00 UTC, however far off: past a
    # countdown, the task parks the chunk instead of passing every countdown.
    wait_s = results[-1].next_pass_in_s
    to_midnight_s = 86400 - time.time() % 86400
    assert wait_s is not None and to_midnight_s - 5 < wait_s <= to_midnight_s + 1


def test_recipients_held_by_a_daily_cap_are_looked_at_again_when_validity_ends(
    producer: Producer, redis_url: str
) -> None:
    job_id = route_job(producer, KE_NUMBERS[:2], validity_minutes=1)
    adapters: dict[str, FakeAdapter] = {
        "ro": accepting(RO),
        "ke": accepting(replace(KE, daily_max_parts=1)),
        "backup": accepting(replace(BACKUP, daily_max_parts=1)),
    }
    results = on_valkey(redis_url, lambda client: guarded_passes(client, adapters, job_id, most=3))
    wait_s = results[-1].next_pass_in_s
    assert wait_s is not None and 50 < wait_s <= 60.5


def test_parts_taken_for_a_request_that_never_began_go_back_to_the_daily_cap(
    producer: Producer, redis_url: str
) -> None:
    job_id = route_job(producer, RO_NUMBERS)
    capped = accepting(replace(RO, daily_max_parts=100))
    adapters: dict[str, FakeAdapter] = {
        "ro": capped,
        "ke": accepting(KE),
        "backup": accepting(BACKUP),
    }

    async def paused_meanwhile(client: aioredis.Redis) -> PassResult:
        store = ResultsStore(client)
        job = await store.job(job_id)
        assert job is not None
        await client.hset(keys.job(job_id), "state", "paused")  # after the pass read the job
        token = new_token()
        assert await store.acquire_lease(job_id, 0, token, TIMING.lease_ttl_s)
        guards = AccountGuards(Circuits(client), DailyCaps(client))
        sender = ChunkSender(
            store,
            RateLimiter(client),
            capped,
            job,
            0,
            TIMING,
            lease_token=token,
            route=WORLD,
            adapters=adapters,
            guards=guards,
        )
        return await sender.run(cast(aiohttp.ClientSession, None))

    result = on_valkey(redis_url, paused_meanwhile)
    assert result.stopped and capped.posts == []
    assert producer.redis.hget(keys.daily_parts("ro"), "parts") == b"0"
