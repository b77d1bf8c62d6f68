"""``max_cost`` on the producer's side, against a real Valkey: refused at
submission unless every account the job may use is priced (in one
currency), with nothing stored; a resume's new cap (never below what is
spent); the status's ``max_cost``, ``spent`` and ``pause_reason``; prices in
the workers' registry for producers without the file."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import InvalidResume, JobRefused, JobStateConflict, NoSuchJob, Producer
from producer.accounts import AccountInfo, Accounts, load_accounts, registry_value
from producer.core import keys
from producer.core.money import micros
from producer.core.scripts import script
from producer.core.settings import job_settings
from producer.estimate import CapEstimate, estimate_job
from producer.routes import Route
from producer.validation import validate_job
from tests.conftest import FAST, sandbox_account
from tests.producer.test_control import mark_running, settle
from tests.producer.test_job import job

PRICED = AccountInfo("bulk", "sendbulk", price_per_part=Decimal("0.05"), currency="EUR")
ACCOUNTS = Accounts(
    {
        "bulk": PRICED,
        "free": AccountInfo("free", "sendbulk"),
        "usd": AccountInfo("usd", "sendbulk", price_per_part=Decimal("0.01"), currency="USD"),
        "eur": AccountInfo("eur", "sendbulk", price_per_part=Decimal("0.04"), currency="EUR"),
    },
    {
        "mixed": Route("mixed", "RO", ("bulk",), {"US": ("usd",)}),
        "partly": Route("partly", "RO", ("bulk", "free")),
        "euro": Route("euro", "RO", ("bulk",), {"KE": ("eur",)}),
    },
)


def refusal(**fields: Any) -> list[dict[str, Any]]:
    with pytest.raises(JobRefused) as info:
        validate_job(job(**fields), ACCOUNTS)
    return info.value.errors


@pytest.fixture
def priced(producer: Producer, config_file: Path) -> Producer:
    config_file.write_text(
        sandbox_account("bulk", "http://127.0.0.1:9", **FAST, price_per_part=0.05, currency="EUR")
        + sandbox_account("free", "http://127.0.0.1:9", **FAST)
    )
    return producer


def capped(producer: Producer, max_cost: str = "1.00", count: int = 3) -> str:
    job_id = producer.submit(
        job(max_cost=max_cost, messages=[{"to": f"07{20000000 + i}"} for i in range(count)])
    )
    mark_running(producer.redis, job_id)
    return job_id


def reserve(client: redis.Redis, job_id: str, units: int) -> str:
    """A worker's reservation (cost_reserve.lua), of ``units`` millionths."""
    settings = job_settings(client, job_id)
    assert settings is not None and settings.max_cost is not None
    submitted = micros(Decimal(settings.max_cost))
    raw = script("cost_reserve")(keys=[keys.job(job_id)], args=[submitted, units], client=client)
    return raw.decode() if isinstance(raw, bytes) else str(raw)


# --- submission -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "1e3", "1.1234567", "1234567890", "", 1.5, 2, True])
def test_a_malformed_max_cost_is_refused_naming_it(value: object) -> None:
    errors = refusal(max_cost=value)
    assert [e["field"] for e in errors] == ["max_cost"]
    assert "decimal string" in errors[0]["msg"]


def test_a_well_formed_max_cost_on_a_priced_account_is_accepted() -> None:
    assert validate_job(job(max_cost="25.50"), ACCOUNTS).max_cost == "25.50"
    assert validate_job(job(max_cost="999999999.999999"), ACCOUNTS).max_cost
    assert validate_job(job(provider="euro", max_cost="3"), ACCOUNTS).max_cost == "3"


def test_an_account_without_a_price_is_refused_naming_max_cost_and_the_account() -> None:
    (error,) = refusal(provider="free", max_cost="5")
    assert error["field"] == "max_cost" and "account free has no price_per_part" in error["msg"]
    (error,) = refusal(provider="partly", max_cost="5")  # every account of the route
    assert error["field"] == "max_cost" and "account free" in error["msg"]


def test_accounts_in_different_currencies_are_refused_saying_which() -> None:
    (error,) = refusal(provider="mixed", max_cost="5")
    assert error["field"] == "max_cost"
    assert "different currencies (EUR: bulk; USD: usd)" in error["msg"]


def test_a_refused_job_stores_nothing_and_answers_422_like_the_others(
    priced: Producer, redis_client: redis.Redis
) -> None:
    with pytest.raises(JobRefused) as info:
        priced.submit(job(provider="free", max_cost="5"))
    assert [e["field"] for e in info.value.errors] == ["max_cost"]
    assert redis_client.keys("*") == []


def test_a_job_without_max_cost_needs_no_price() -> None:
    assert validate_job(job(provider="free"), ACCOUNTS).max_cost is None


# --- status ---------------------------------------------------------------------


def test_the_status_shows_the_cap_what_is_spent_and_why_it_paused(
    priced: Producer, redis_client: redis.Redis
) -> None:
    job_id = capped(priced, "0.10")
    status = priced.status(job_id)
    assert (status.max_cost, status.spent, status.pause_reason) == ("0.1", "0", None)
    assert reserve(redis_client, job_id, 60_000) == "reserved"
    assert reserve(redis_client, job_id, 50_000) == "capped"
    status = priced.status(job_id)
    assert (status.state, status.spent, status.pause_reason) == ("paused", "0.06", "max_cost")
    dumped = status.model_dump(mode="json")
    assert dumped["spent"] == "0.06" and dumped["pause_reason"] == "max_cost"
    plain = priced.status(priced.submit(job())).model_dump(mode="json")
    assert {k: plain[k] for k in ("max_cost", "spent", "pause_reason")} == dict.fromkeys(
        ("max_cost", "spent", "pause_reason")
    )


def test_a_pause_by_a_caller_has_no_reason(priced: Producer) -> None:
    job_id = capped(priced)
    assert priced.pause(job_id).pause_reason is None


# --- resume ---------------------------------------------------------------------


def test_resume_with_a_higher_cap_goes_on_and_forgets_the_reason(
    priced: Producer, redis_client: redis.Redis
) -> None:
    job_id = capped(priced, "0.10")
    reserve(redis_client, job_id, 100_000)
    assert reserve(redis_client, job_id, 50_000) == "capped"
    status = priced.resume(job_id, "0.25")
    assert (status.state, status.max_cost, status.spent, status.pause_reason) == (
        "queued",
        "0.25",
        "0.1",
        None,
    )
    assert reserve(redis_client, job_id, 150_000) == "reserved"  # the new cap counts
    assert reserve(redis_client, job_id, 1) == "capped"


def test_resume_without_a_cap_keeps_the_old_one(
    priced: Producer, redis_client: redis.Redis
) -> None:
    job_id = capped(priced, "0.10")
    reserve(redis_client, job_id, 100_000)
    assert reserve(redis_client, job_id, 1) == "capped"
    status = priced.resume(job_id)
    assert (status.state, status.max_cost, status.pause_reason) == ("queued", "0.1", None)
    assert reserve(redis_client, job_id, 1) == "capped"  # paused again at once


def test_a_cap_below_what_is_spent_is_refused_naming_max_cost(
    priced: Producer, redis_client: redis.Redis
) -> None:
    job_id = capped(priced, "1")
    reserve(redis_client, job_id, 600_000)
    priced.pause(job_id)
    with pytest.raises(InvalidResume) as info:
        priced.resume(job_id, "0.5")
    assert info.value.errors[0]["field"] == "max_cost"
    assert "below what the job has spent already (0.6)" in str(info.value)
    assert priced.status(job_id).state == "paused"  # unchanged
    assert priced.status(job_id).max_cost == "1"
    assert priced.resume(job_id, "0.6").max_cost == "0.6"  # what is spent is enough


def test_a_cap_can_be_set_on_a_running_job_but_not_added_to_one_without(
    priced: Producer,
) -> None:
    job_id = capped(priced, "1")
    status = priced.resume(job_id, "2")
    assert (status.state, status.max_cost) == ("running", "2")
    plain = priced.submit(job())
    with pytest.raises(InvalidResume, match="max_cost: the job was submitted without"):
        priced.resume(plain, "2")
    with pytest.raises(InvalidResume, match="max_cost: must be a decimal string"):
        priced.resume(job_id, "lots")


def test_resume_with_a_cap_of_an_ended_or_unknown_job(
    priced: Producer, redis_client: redis.Redis
) -> None:
    job_id = capped(priced, "1", count=1)
    settle(redis_client, job_id, {0: "accepted"})
    assert priced.status(job_id).state == "completed"
    with pytest.raises(JobStateConflict):
        priced.resume(job_id, "2")
    assert priced.status(job_id).max_cost == "1"
    with pytest.raises(NoSuchJob):
        priced.resume("nope", "2")


# --- estimate -------------------------------------------------------------------


def test_estimate_says_whether_the_cap_covers_the_job() -> None:
    messages = [{"to": f"07{20000000 + i}"} for i in range(10)]  # 10 parts: 0.50
    under = estimate_job(validate_job(job(max_cost="0.40", messages=messages), ACCOUNTS), ACCOUNTS)
    assert under.spend_cap is not None
    assert (under.total.cost, under.spend_cap.covers) == ("0.50", False)
    enough = validate_job(job(max_cost="0.5", messages=messages), ACCOUNTS)
    assert estimate_job(enough, ACCOUNTS).spend_cap == CapEstimate(max_cost="0.5", covers=True)
    assert estimate_job(validate_job(job(), ACCOUNTS), ACCOUNTS).spend_cap is None


# --- the registry -----------------------------------------------------------------


def test_the_registry_carries_prices_for_producers_without_the_file(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMSBULK_CONFIG", raising=False)
    redis_client.hset(
        keys.ACCOUNTS, mapping={"bulk": registry_value(PRICED), "old": "sendbulk\tX\t"}
    )
    accounts = load_accounts(redis_client)
    assert accounts["bulk"] == PRICED
    assert accounts["old"].price_per_part is None
    assert validate_job(job(max_cost="1"), accounts).max_cost == "1"
