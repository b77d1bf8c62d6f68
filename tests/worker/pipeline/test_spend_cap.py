"""``max_cost`` (worker/pipeline/spend_cap.py, the pass's reservation before
each request) on a real Valkey, with fake adapters: the cap is never
passed, however many callers reserve at once; the request that would pass
it is not sent and pauses the job (``pause_reason: "max_cost"``); a resume
with a higher cap goes on; a reservation comes back only for what provably
sent nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import redis.asyncio as aioredis

from producer import Producer
from producer.core import keys
from producer.core.store import iter_outcomes
from tests.conftest import FAST, sandbox_account
from tests.producer.test_control import mark_running
from tests.worker.pipeline.test_routing import BACKUP, KE, RO, WORLD, Answering, passes
from tests.worker.pipeline.test_sending import ACCOUNT, TIMING, FakeAdapter, on_valkey
from worker.pipeline import sending, spend_cap
from worker.pipeline.daily_cap import DailyCaps
from worker.pipeline.guards import AccountGuards
from worker.pipeline.rate_limit import RateLimiter
from worker.pipeline.sending import ChunkSender, PassResult
from worker.pipeline.spend_cap import SpendCap, cost_units, refund_units
from worker.providers.account import Account
from worker.providers.base import JobContext, Recipient, RecipientResult, SendResult, Verdict
from worker.store import ResultsStore, new_token

PRICE = Decimal("0.05")
PRICED = replace(ACCOUNT, price_per_part=PRICE, currency="EUR")
NUMBERS = [f"07{20000000 + i}" for i in range(4)]
LONG_TEXT = "x" * 200  # 2 parts (GSM-7: 153 a part)


@pytest.fixture
def priced(producer: Producer, config_file: Path) -> Producer:
    """The producer, with account `bulk` priced (0.05 EUR a part) and the
    routes' accounts too."""
    base = "http://127.0.0.1:9"
    priced_accounts = {"price_per_part": float(PRICE), "currency": "EUR", **FAST}
    config_file.write_text(
        "".join(sandbox_account(name, base, **priced_accounts) for name in ("bulk", "ro", "ke"))
        + sandbox_account("backup", base, **FAST, price_per_part=0.5, currency="EUR")
    )
    return producer


def capped_job(
    producer: Producer, max_cost: str, numbers: Sequence[str] = NUMBERS, **more: Any
) -> str:
    job_id = producer.submit(
        {
            "provider": "bulk",
            "text": "hi",
            "max_cost": max_cost,
            "messages": [{"to": number} for number in numbers],
            **more,
        }
    )
    mark_running(producer.redis, job_id)
    return job_id


async def one_pass(
    client: aioredis.Redis,
    adapter: FakeAdapter,
    job_id: str,
    guards: AccountGuards | None = None,
    store: ResultsStore | None = None,
) -> PassResult:
    store = store or ResultsStore(client)
    job = await store.job(job_id)
    assert job is not None
    token = new_token()
    assert await store.acquire_lease(job_id, 0, token, TIMING.lease_ttl_s)
    try:
        sender = ChunkSender(
            store, RateLimiter(client), adapter, job, 0, TIMING, lease_token=token, guards=guards
        )
        return await sender.run(cast(aiohttp.ClientSession, None))
    finally:
        await store.release_lease(job_id, 0, token)


def statuses(producer: Producer, job_id: str) -> list[str]:
    return [r.status for r in iter_outcomes(producer.redis, job_id)]


def spent_units(producer: Producer, job_id: str) -> int:
    return int(producer.redis.hget(keys.job(job_id), "cost_spent") or 0)


# --- the scripts, on their own ------------------------------------------------


def test_costs_are_whole_millionths_rounded_up_and_given_back_rounded_down() -> None:
    assert cost_units(PRICED, 3) == 150_000
    odd = replace(PRICED, price_per_part=Decimal("0.0000001"))
    assert cost_units(odd, 1) == 1  # never less than the price says
    assert cost_units(ACCOUNT, 3) is None  # no price
    assert refund_units(PRICED, 150_000, 3, 3) == 150_000
    assert refund_units(PRICED, 150_000, 1, 3) == 50_000
    assert refund_units(odd, 1, 1, 2) == 0  # its share rounds down
    assert refund_units(PRICED, 150_000, 0, 3) == 0


def test_reservations_stop_at_the_cap_exactly_and_the_one_that_would_pass_it_pauses(
    priced: Producer, redis_url: str
) -> None:
    job_id = capped_job(priced, "0.25")

    async def scenario(client: aioredis.Redis) -> None:
        cap = SpendCap(client, job_id, "0.25")
        assert (await cap.reserve(PRICED, 3)).units == 150_000
        assert (await cap.reserve(PRICED, 2)).answer == "reserved"  # 0.25 of 0.25
        assert (await cap.reserve(PRICED, 1)).answer == "capped"
        assert (await cap.reserve(PRICED, 1)).answer == "stopped"  # paused now
        assert (await cap.reserve(ACCOUNT, 1)).answer == "unpriced"

    on_valkey(redis_url, scenario)
    status = priced.status(job_id)
    assert (status.state, status.pause_reason) == ("paused", "max_cost")
    assert (status.spent, status.max_cost) == ("0.25", "0.25")
    assert priced.redis.hget(keys.job(job_id), "paused_from") == b"running"


def test_concurrent_reservations_never_pass_the_cap(priced: Producer, redis_url: str) -> None:
    job_id = capped_job(priced, "1")
    costs = [1 + i % 4 for i in range(200)]  # parts: 0.05 to 0.20 each, 25 in all

    async def scenario(client: aioredis.Redis) -> list[spend_cap.Reservation]:
        clients = [aioredis.Redis.from_url(redis_url) for _ in range(4)]
        try:
            caps = [SpendCap(c, job_id, "1") for c in clients]
            return await asyncio.gather(
                *(caps[i % 4].reserve(PRICED, parts) for i, parts in enumerate(costs))
            )
        finally:
            for c in clients:
                await c.aclose()

    reservations = on_valkey(redis_url, scenario)
    answers = [r.answer for r in reservations]
    assert answers.count("capped") == 1  # the one that would have passed it paused the job
    reserved = sum(r.units for r in reservations)
    assert 0 < reserved <= 1_000_000
    assert spent_units(priced, job_id) == reserved
    assert priced.status(job_id).pause_reason == "max_cost"


def test_a_give_back_never_goes_below_zero_nor_makes_a_gone_job_again(
    priced: Producer, redis_url: str
) -> None:
    job_id = capped_job(priced, "1")

    async def scenario(client: aioredis.Redis) -> None:
        cap = SpendCap(client, job_id, "1")
        await cap.reserve(PRICED, 2)
        await cap.give_back(50_000)
        assert await client.hget(keys.job(job_id), "cost_spent") == b"50000"
        await cap.give_back(10**6)
        assert await client.hget(keys.job(job_id), "cost_spent") == b"0"
        await client.delete(keys.job(job_id))
        await cap.give_back(50_000)
        assert not await client.exists(keys.job(job_id))

    on_valkey(redis_url, scenario)


# --- the pass ------------------------------------------------------------------


def test_the_request_that_would_pass_the_cap_is_not_sent_and_the_job_pauses(
    priced: Producer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sending, "REQUESTS_IN_FLIGHT_PER_CHUNK", 1)  # one after another
    job_id = capped_job(priced, "0.10")  # two of the four 1-part requests
    adapter = FakeAdapter(PRICED)
    result = on_valkey(redis_url, lambda client: one_pass(client, adapter, job_id))
    assert len(adapter.posts) == 2
    assert result.stopped and not result.chunk_done  # a resume enqueues the chunk again
    status = priced.status(job_id)
    assert (status.state, status.pause_reason, status.spent) == ("paused", "max_cost", "0.1")
    assert sorted(statuses(priced, job_id)) == ["accepted", "accepted", "pending", "pending"]
    assert priced.redis.hlen(keys.requests(job_id, 0)) == 2  # the unsent ones forgotten

    resumed = priced.resume(job_id, "0.20")
    assert (resumed.state, resumed.pause_reason, resumed.max_cost) == ("queued", None, "0.2")
    on_valkey(redis_url, lambda client: one_pass(client, adapter, job_id))
    assert sorted(adapter.posts) == [0, 1, 2, 3]  # each once
    status = priced.status(job_id)
    assert (status.state, status.spent) == ("completed", "0.2")


def test_requests_in_flight_at_the_pause_that_had_not_begun_give_their_cost_back(
    priced: Producer, redis_url: str
) -> None:
    """Four requests at once against room for two: the one that finds no
    room pauses the job, and those that had reserved but not begun find
    it paused, so send nothing and give back; none passes the cap."""
    job_id = capped_job(priced, "0.10")
    adapter = FakeAdapter(PRICED)
    result = on_valkey(redis_url, lambda client: one_pass(client, adapter, job_id))
    status = priced.status(job_id)
    assert result.stopped and (status.state, status.pause_reason) == ("paused", "max_cost")
    assert len(adapter.posts) <= 2
    assert Decimal(status.spent or "") == PRICE * len(adapter.posts)
    priced.resume(job_id, "1")
    on_valkey(redis_url, lambda client: one_pass(client, adapter, job_id))
    assert sorted(adapter.posts) == [0, 1, 2, 3]
    assert priced.status(job_id).state == "completed"


def test_the_cost_is_parts_times_the_sending_accounts_price(
    priced: Producer, redis_url: str
) -> None:
    job_id = priced.submit(
        {
            "provider": "bulk",
            "max_cost": "100",
            "messages": [{"to": NUMBERS[0], "text": "hi"}, {"to": NUMBERS[1], "text": LONG_TEXT}],
        }
    )
    mark_running(priced.redis, job_id)
    on_valkey(redis_url, lambda client: one_pass(client, FakeAdapter(PRICED), job_id))
    assert priced.status(job_id).spent == "0.15"  # 3 parts x 0.05


def test_a_route_jobs_requests_cost_their_own_accounts_price(
    priced: Producer, redis_url: str
) -> None:
    job_id = capped_job(priced, "100", [NUMBERS[0], "+254712000000"])
    adapters: dict[str, FakeAdapter] = {
        "ro": Answering(replace(RO, price_per_part=Decimal("0.05")), Verdict.FAILED),
        "ke": Answering(replace(KE, price_per_part=Decimal("0.02")), Verdict.ACCEPTED),
        "backup": Answering(replace(BACKUP, price_per_part=Decimal("0.5")), Verdict.ACCEPTED),
    }
    on_valkey(redis_url, lambda client: passes(client, adapters, job_id))
    assert adapters["ro"].posts == [0] and adapters["backup"].posts == [0]
    # ro refused it (given back); backup sent it (0.5); ke sent the other (0.02).
    assert priced.status(job_id).spent == "0.52"
    assert WORLD.accounts_for("KE") == ("ke", "backup")


def test_a_refusal_gives_back_the_daily_parts_and_the_dedupe_claims(
    priced: Producer, redis_url: str
) -> None:
    job_id = capped_job(priced, "0.01", NUMBERS[:1], dedupe_minutes=60)  # one part costs 0.05
    daily = replace(PRICED, daily_max_parts=100)
    adapter = FakeAdapter(daily)

    async def scenario(client: aioredis.Redis) -> PassResult:
        guards = AccountGuards(caps=DailyCaps(client))
        return await one_pass(client, adapter, job_id, guards)

    result = on_valkey(redis_url, scenario)
    assert adapter.posts == [] and result.stopped
    assert priced.redis.hget(keys.daily_parts(daily.name), "parts") == b"0"
    assert priced.redis.keys(keys.dedupe("*", "*")) == []
    assert priced.status(job_id).pause_reason == "max_cost"


class Mixed(FakeAdapter):
    """One request for the chunk; even indices refused, odd ones accepted."""

    def group(self, recipients: Sequence[Recipient]) -> list[list[Recipient]]:
        return [list(recipients)]

    async def send(
        self, session: aiohttp.ClientSession, batch: Sequence[Recipient], job: JobContext
    ) -> SendResult:
        self.posts += [r.index for r in batch]
        verdicts = [Verdict.FAILED if r.index % 2 == 0 else Verdict.ACCEPTED for r in batch]
        return SendResult([RecipientResult(v, error="said so") for v in verdicts], http_status=200)


@pytest.mark.parametrize(
    ("adapter", "spent"),
    [
        (Answering(PRICED, Verdict.RETRY, http_status=503), "0"),  # not sent: all back
        (Answering(PRICED, Verdict.FAILED), "0"),  # refused: never accepted
        (Mixed(PRICED), "0.1"),  # the refused recipients' share back
        (Answering(PRICED, Verdict.UNCERTAIN), "0.2"),  # may have been sent: kept
        (Answering(PRICED, Verdict.ACCEPTED), "0.2"),
    ],
)
def test_a_reservation_comes_back_only_for_what_provably_sent_nothing(
    priced: Producer, redis_url: str, adapter: FakeAdapter, spent: str
) -> None:
    job_id = capped_job(priced, "1")
    on_valkey(redis_url, lambda client: one_pass(client, adapter, job_id))
    assert sorted(adapter.posts) == [0, 1, 2, 3]
    assert priced.status(job_id).spent == spent


class PausedAtBegin(ResultsStore):
    """A store whose job is paused between the reservation and the begin."""

    async def begin_request(self, *args: Any) -> str:
        return "stopped"


def test_a_request_that_never_began_gives_its_reservation_back(
    priced: Producer, redis_url: str
) -> None:
    job_id = capped_job(priced, "1")
    adapter = FakeAdapter(PRICED)
    result = on_valkey(
        redis_url, lambda client: one_pass(client, adapter, job_id, store=PausedAtBegin(client))
    )
    assert adapter.posts == [] and result.stopped
    assert priced.status(job_id).spent == "0"


def test_an_account_without_a_price_on_the_worker_fails_its_recipients(
    priced: Producer, redis_url: str
) -> None:
    job_id = capped_job(priced, "1", NUMBERS[:2])
    adapter = FakeAdapter(ACCOUNT)  # this worker's `bulk` has no price_per_part
    on_valkey(redis_url, lambda client: one_pass(client, adapter, job_id))
    assert adapter.posts == []
    records = list(iter_outcomes(priced.redis, job_id))
    assert [r.status for r in records] == ["failed", "failed"]
    assert all("no price_per_part" in (r.error or "") for r in records)


def test_a_job_without_max_cost_makes_no_spend_cap_call(
    producer: Producer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(*_: object) -> spend_cap.Reservation:
        raise AssertionError("a spend cap call")

    def never(*_: object) -> None:
        raise AssertionError("a spend cap made")

    monkeypatch.setattr(SpendCap, "__init__", never)
    monkeypatch.setattr(SpendCap, "reserve", refuse)
    monkeypatch.setattr(SpendCap, "give_back", refuse)
    job_id = producer.submit(
        {"provider": "bulk", "text": "hi", "messages": [{"to": n} for n in NUMBERS]}
    )
    mark_running(producer.redis, job_id)
    adapter = Answering(PRICED, Verdict.RETRY, http_status=503)
    on_valkey(redis_url, lambda client: one_pass(client, adapter, job_id))
    assert sorted(adapter.posts) == [0, 1, 2, 3]
    status = producer.status(job_id)
    assert (status.spent, status.max_cost, status.pause_reason) == (None, None, None)
    assert producer.redis.hget(keys.job(job_id), "cost_spent") is None


def test_one_reservation_script_per_request(
    priced: Producer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    reserve = SpendCap.reserve

    async def counted(self: SpendCap, account: Account, parts: int) -> spend_cap.Reservation:
        calls.append(parts)
        return await reserve(self, account, parts)

    monkeypatch.setattr(SpendCap, "reserve", counted)
    job_id = capped_job(priced, "1")
    on_valkey(
        redis_url, lambda client: one_pass(client, Answering(PRICED, Verdict.ACCEPTED), job_id)
    )
    assert calls == [4]  # one request of 4 parts
