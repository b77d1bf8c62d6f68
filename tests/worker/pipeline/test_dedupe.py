"""``dedupe_minutes`` (worker/pipeline/dedupe.py, the pass's claim before each
request) on a real Valkey, with fake adapters: a recipient sent the same
content by an earlier job within the window is rejected naming it; claims
come back only when a request provably sent nothing; a recipient's own claim
(an earlier pass of it) is never a duplicate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import aiohttp
import pytest
import redis.asyncio as aioredis

from producer import Producer
from producer.core import keys
from producer.core.settings import job_settings
from producer.core.store import iter_outcomes
from producer.validation import validate_job
from tests.producer.test_control import mark_running
from tests.producer.test_job import ACCOUNTS, job, refused_fields
from tests.worker.pipeline.test_routing import BACKUP, KE, RO, Answering, accepting, passes
from tests.worker.pipeline.test_sending import ACCOUNT, TIMING, FakeAdapter, on_valkey
from worker.pipeline import dedupe
from worker.pipeline.dedupe import Dedupe, content_hash
from worker.pipeline.rate_limit import RateLimiter
from worker.pipeline.sending import ChunkSender
from worker.providers.base import Recipient, Verdict
from worker.store import ResultsStore, new_token

NUMBERS = [f"07{20000000 + i}" for i in range(4)]


def dedupe_job(
    producer: Producer, numbers: Sequence[str], text: str = "reminder", **fields: Any
) -> str:
    job_id = producer.submit(
        {
            "provider": "bulk",
            "text": text,
            "dedupe_minutes": 60,
            "messages": [{"to": number} for number in numbers],
            **fields,
        }
    )
    mark_running(producer.redis, job_id)
    return job_id


async def send_all(
    client: aioredis.Redis, adapter: FakeAdapter, job_id: str, most: int = 5
) -> None:
    """Passes of a one-account job until nothing is left (waits skipped)."""
    store = ResultsStore(client)
    for _ in range(most):
        job = await store.job(job_id)
        assert job is not None
        token = new_token()
        assert await store.acquire_lease(job_id, 0, token, TIMING.lease_ttl_s)
        try:
            sender = ChunkSender(
                store, RateLimiter(client), adapter, job, 0, TIMING, lease_token=token
            )
            result = await sender.run(cast(aiohttp.ClientSession, None))
        finally:
            await store.release_lease(job_id, 0, token)
        if result.next_pass_in_s is None:
            return


def statuses(producer: Producer, job_id: str) -> list[str]:
    return [r.status for r in iter_outcomes(producer.redis, job_id)]


@pytest.mark.parametrize("minutes", [0, 43_201, 1.5])
def test_dedupe_minutes_outside_1_to_43200_is_refused_naming_it(minutes: object) -> None:
    assert "dedupe_minutes" in refused_fields(job(dedupe_minutes=minutes))


def test_dedupe_minutes_is_stored_and_read_back(producer: Producer) -> None:
    assert validate_job(job(dedupe_minutes=43_200), ACCOUNTS).dedupe_minutes == 43_200
    job_id = dedupe_job(producer, NUMBERS[:1])
    settings = job_settings(producer.redis, job_id)
    assert settings is not None and settings.dedupe_minutes == 60


def test_the_same_text_to_the_same_numbers_again_is_rejected_naming_the_first(
    producer: Producer, redis_url: str
) -> None:
    first, second = dedupe_job(producer, NUMBERS), dedupe_job(producer, NUMBERS)
    adapter = FakeAdapter(ACCOUNT)
    on_valkey(redis_url, lambda client: send_all(client, adapter, first))
    on_valkey(redis_url, lambda client: send_all(client, adapter, second))
    assert sorted(adapter.posts) == [0, 1, 2, 3]  # each number once, by the first job
    assert statuses(producer, first) == ["accepted"] * 4
    records = list(iter_outcomes(producer.redis, second))
    assert [r.status for r in records] == ["rejected"] * 4
    for n, record in enumerate(records):
        assert record.error == (
            f"duplicate of an earlier send within 60 minutes (job {first}, message {n})"
        )
    assert producer.status(second).state == "completed"


def test_another_text_or_template_params_is_no_duplicate(
    producer: Producer, redis_url: str
) -> None:
    first = dedupe_job(producer, NUMBERS, text="reminder")
    second = dedupe_job(producer, NUMBERS, text="reminder, again")
    adapter = FakeAdapter(ACCOUNT)
    for job_id in (first, second):
        on_valkey(redis_url, lambda client, j=job_id: send_all(client, adapter, j))
    assert sorted(adapter.posts) == sorted([0, 1, 2, 3] * 2)
    assert statuses(producer, first) == statuses(producer, second) == ["accepted"] * 4
    template = Recipient(0, "+40720000000", "0720000000", None, ["Ana"], None, None)
    other = Recipient(0, "+40720000000", "0720000000", None, ["Ion"], None, None)
    assert content_hash(template, "t1") != content_hash(other, "t1")
    assert content_hash(template, "t1") != content_hash(template, "t2")
    assert content_hash(template, "t1") == content_hash(template, "t1")
    assert len(content_hash(template, "t1")) == 16


def test_a_request_that_provably_sent_nothing_gives_its_claims_back(
    producer: Producer, redis_url: str
) -> None:
    first, second = dedupe_job(producer, NUMBERS[:2]), dedupe_job(producer, NUMBERS[:2])
    down = Answering(ACCOUNT, Verdict.RETRY, http_status=503)

    async def one_failed_pass(client: aioredis.Redis) -> None:
        await send_all(client, down, first, most=1)

    on_valkey(redis_url, one_failed_pass)
    assert sorted(down.posts) == [0, 1]
    assert statuses(producer, first) == ["pending"] * 2
    assert producer.redis.keys(keys.dedupe("*", "*")) == []  # given back
    adapter = accepting(ACCOUNT)
    on_valkey(redis_url, lambda client: send_all(client, adapter, second))
    assert statuses(producer, second) == ["accepted"] * 2
    # The first job's retry now finds the second's send: not sent twice.
    on_valkey(redis_url, lambda client: send_all(client, adapter, first))
    assert sorted(adapter.posts) == [0, 1]
    records = list(iter_outcomes(producer.redis, first))
    assert [r.status for r in records] == ["rejected"] * 2
    assert all(f"(job {second}, message" in (r.error or "") for r in records)


@pytest.mark.parametrize("verdict", [Verdict.UNCERTAIN, Verdict.ACCEPTED])
def test_a_claim_is_never_given_back_after_an_uncertain_answer_or_an_acceptance(
    producer: Producer, redis_url: str, verdict: Verdict
) -> None:
    first, second = dedupe_job(producer, NUMBERS[:2]), dedupe_job(producer, NUMBERS[:2])
    on_valkey(redis_url, lambda client: send_all(client, Answering(ACCOUNT, verdict), first))
    assert set(statuses(producer, first)) == {
        "unknown" if verdict is Verdict.UNCERTAIN else "accepted"
    }
    assert len(producer.redis.keys(keys.dedupe("*", "*"))) == 2
    adapter = accepting(ACCOUNT)
    on_valkey(redis_url, lambda client: send_all(client, adapter, second))
    assert adapter.posts == []
    assert statuses(producer, second) == ["rejected"] * 2


def test_a_recipient_that_fails_over_keeps_its_claim_and_is_not_its_own_duplicate(
    producer: Producer, redis_url: str
) -> None:
    job_id = dedupe_job(producer, NUMBERS[:3])
    later = dedupe_job(producer, NUMBERS[:3])
    adapters: dict[str, FakeAdapter] = {
        "ro": Answering(RO, Verdict.FAILED),  # refused: not "not sent", the claim stays
        "ke": accepting(KE),
        "backup": accepting(BACKUP),
    }
    on_valkey(redis_url, lambda client: passes(client, adapters, job_id))
    assert sorted(adapters["ro"].posts) == [0, 1, 2]
    assert sorted(adapters["backup"].posts) == [0, 1, 2]
    records = list(iter_outcomes(producer.redis, job_id))
    assert all(r.status == "accepted" and r.provider == "backup" for r in records)
    on_valkey(redis_url, lambda client: passes(client, adapters, later))
    assert sorted(adapters["backup"].posts) == [0, 1, 2]
    assert statuses(producer, later) == ["rejected"] * 3


def test_a_recipients_own_claim_from_an_earlier_pass_is_not_a_duplicate(
    producer: Producer, redis_url: str
) -> None:
    job_id = dedupe_job(producer, NUMBERS[:2])
    adapter = FakeAdapter(ACCOUNT)
    mine = Recipient(0, "+40720000000", "0720000000", "reminder", None, None, 1)

    async def claimed_then_sent(client: aioredis.Redis) -> None:
        assert await Dedupe(client, job_id, 60, None).claim([mine]) == {}  # an earlier pass's
        await send_all(client, adapter, job_id)

    on_valkey(redis_url, claimed_then_sent)
    assert sorted(adapter.posts) == [0, 1]
    assert statuses(producer, job_id) == ["accepted"] * 2


def test_the_same_number_twice_in_one_job_is_sent_once(producer: Producer, redis_url: str) -> None:
    job_id = dedupe_job(producer, [NUMBERS[0], NUMBERS[0]])
    adapter = FakeAdapter(ACCOUNT)
    on_valkey(redis_url, lambda client: send_all(client, adapter, job_id))
    assert len(adapter.posts) == 1
    assert sorted(statuses(producer, job_id)) == ["accepted", "rejected"]


def test_an_older_claim_than_the_window_is_taken_over(producer: Producer, redis_url: str) -> None:
    job_id = dedupe_job(producer, NUMBERS[:1])
    mine = Recipient(0, "+40720000000", "0720000000", "reminder", None, None, 1)

    async def claims(client: aioredis.Redis) -> None:
        key = keys.dedupe(mine.e164, content_hash(mine, None))
        await client.set(key, "old-job 5 1000", px=10**9)  # claimed long ago, a long window
        assert await Dedupe(client, job_id, 60, None).claim([mine]) == {}
        held = (await client.get(key)).decode()
        assert held.startswith(f"{job_id} 0 ") and await client.pttl(key) > 60 * 60_000
        other = Dedupe(client, "other", 60, None)
        assert "(job " + job_id + ", message 0)" in (await other.claim([mine]))[0]

    on_valkey(redis_url, claims)


def test_a_job_without_dedupe_minutes_makes_no_dedupe_call(
    producer: Producer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(*_: object) -> dict[int, str]:
        raise AssertionError("a dedupe call")

    monkeypatch.setattr(dedupe.Dedupe, "claim", refuse)
    monkeypatch.setattr(dedupe.Dedupe, "release", refuse)
    job_id = producer.submit(
        {"provider": "bulk", "text": "reminder", "messages": [{"to": n} for n in NUMBERS]}
    )
    mark_running(producer.redis, job_id)
    adapter = Answering(ACCOUNT, Verdict.RETRY, http_status=503)
    on_valkey(redis_url, lambda client: send_all(client, adapter, job_id, most=1))
    assert sorted(adapter.posts) == [0, 1, 2, 3]
    assert producer.redis.keys(keys.dedupe("*", "*")) == []


def test_one_claim_script_per_request(
    producer: Producer, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    claim = Dedupe.claim

    async def counted(self: Dedupe, batch: list[Recipient]) -> dict[int, str]:
        calls.append(len(batch))
        return await claim(self, batch)

    monkeypatch.setattr(Dedupe, "claim", counted)
    job_id = dedupe_job(producer, NUMBERS)
    adapter = accepting(ACCOUNT)  # one request for the chunk
    on_valkey(redis_url, lambda client: send_all(client, adapter, job_id))
    assert calls == [4]


BYTES_PER_CLAIM = 160  # docs/BENCHMARKS.md "Duplicate suppression"; README "Guards"


def test_a_claim_costs_one_key_of_at_most_160_bytes_per_recipient(redis_url: str) -> None:
    recipients = [
        Recipient(i, f"+4072{i:07d}", "", "Reminder: tomorrow at 10:00.", None, None, 1)
        for i in range(100_000, 102_000)  # six-digit indices
    ]

    async def claimed(client: aioredis.Redis) -> list[int]:
        await Dedupe(client, "0123456789abcdef0123456789abcdef", 43_200, None).claim(recipients)
        found = [key async for key in client.scan_iter(keys.dedupe("*", "*"))]
        assert len(found) == len(recipients)
        return [await client.memory_usage(key) for key in found]

    usage = on_valkey(redis_url, claimed)
    assert max(usage) <= BYTES_PER_CLAIM, max(usage)


def test_a_recipient_the_provider_refused_gives_its_claim_back(
    producer: Producer, redis_url: str
) -> None:
    """Refused (FAILED): never accepted, so a later job may send it."""
    first, second = dedupe_job(producer, NUMBERS[:2]), dedupe_job(producer, NUMBERS[:2])
    on_valkey(redis_url, lambda c: send_all(c, Answering(ACCOUNT, Verdict.FAILED), first))
    assert statuses(producer, first) == ["failed"] * 2
    assert producer.redis.keys(keys.dedupe("*", "*")) == []
    adapter = accepting(ACCOUNT)
    on_valkey(redis_url, lambda client: send_all(client, adapter, second))
    assert statuses(producer, second) == ["accepted"] * 2
