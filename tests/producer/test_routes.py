"""Routes around the pipeline (docs/INTERFACE.md, "Routes and failover"):
the table and its start-up refusals, producers loading it (file or
registry), validation against every account, estimate, per-account status
counts and the retry's reset of them."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Producer
from producer.accounts import AccountInfo, Accounts, KindInfo, accounts_from_config, load_accounts
from producer.core import keys, scripts
from producer.core.store import status_from_hash
from producer.estimate import estimate_job
from producer.job import JobRefused
from producer.routes import Route, RouteError, parse_routes
from producer.validation import validate_job
from worker.cli import main

TEMPLATE = KindInfo(template=True, needs_sender=True)
WORLD = {"default_region": "RO", "accounts": ["bulk"], "countries": {"KE": ["ke", "bulk"]}}


def routes(**tables: Any) -> dict[str, Route]:
    return parse_routes({"routes": tables}, ["bulk", "ke", "ro"])


# --- the table --------------------------------------------------------------


def test_a_route_gives_each_region_its_list_and_survives_its_registry_form() -> None:
    route = routes(world=WORLD)["world"]
    assert route.accounts_for("KE") == ("ke", "bulk")
    assert route.accounts_for("US") == route.accounts_for(None) == ("bulk",)
    assert route.every_account() == ["bulk", "ke"]
    assert Route.from_json("world", route.to_json()) == route


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        ({"routes": ["world"]}, "routes:"),
        ({"routes": {"world": "bulk"}}, "routes.world:"),
        ({"routes": {"world": {**WORLD, "weights": [1]}}}, "routes.world.weights:"),
        ({"routes": {"world": {"accounts": ["bulk"]}}}, "routes.world.default_region:"),
        ({"routes": {"world": {**WORLD, "default_region": "ro"}}}, "routes.world.default_region:"),
        ({"routes": {"world": {**WORLD, "accounts": []}}}, "routes.world.accounts:"),
        ({"routes": {"world": {**WORLD, "accounts": "bulk"}}}, "routes.world.accounts:"),
        ({"routes": {"world": {**WORLD, "accounts": [1]}}}, "routes.world.accounts:"),
        ({"routes": {"world": {**WORLD, "accounts": ["bulk", "bulk"]}}}, "routes.world.accounts:"),
        ({"routes": {"world": {**WORLD, "countries": ["KE"]}}}, "routes.world.countries:"),
        (
            {"routes": {"world": {**WORLD, "countries": {"Kenya": ["ke"]}}}},
            "routes.world.countries.Kenya:",
        ),
        ({"routes": {"world": {**WORLD, "countries": {"KE": []}}}}, "routes.world.countries.KE:"),
        (
            {"routes": {"world": {**WORLD, "accounts": ["nope"]}}},
            "routes.world: names account 'nope'",
        ),
        (
            {"routes": {"world": {**WORLD, "countries": {"KE": ["gone"]}}}},
            "routes.world: names account 'gone'",
        ),
        ({"routes": {"bulk": WORLD}}, "routes.bulk: the name is an account's"),
    ],
)
def test_every_refusal_names_its_key(raw: dict[str, Any], named: str) -> None:
    with pytest.raises(RouteError) as refused:
        parse_routes(raw, ["bulk", "ke"])
    assert str(refused.value).startswith(named)


# --- producers load them ------------------------------------------------------

CONFIG = """
[providers.bulk]
kind = "sendbulk"
base_url = "https://example.com"
default_region = "RO"
price_per_part = "0.01"
currency = "EUR"

[providers.ke]
kind = "sendbulk"
base_url = "https://example.com"
default_region = "KE"
price_per_part = "0.02"
currency = "EUR"

[providers.ro]
kind = "gosms"
base_url = "https://example.com"
default_region = "RO"
price_per_part = "0.035"
currency = "EUR"

[routes.world]
default_region = "RO"
accounts = ["bulk"]
[routes.world.countries]
KE = ["ke", "bulk"]
RO = ["ro", "bulk"]
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "providers.toml"
    path.write_text(CONFIG)
    monkeypatch.setenv("SMSBULK_CONFIG", str(path))
    return path


def test_producers_read_the_files_routes(config: Path) -> None:
    accounts = load_accounts(None, str(config), {"sendbulk": KindInfo(), "gosms": KindInfo()})
    assert set(accounts) == {"bulk", "ke", "ro"}
    assert accounts.routes["world"].accounts_for("RO") == ("ro", "bulk")


def test_a_file_whose_route_names_an_unknown_account_is_refused(tmp_path: Path) -> None:
    import tomllib

    raw = tomllib.loads(CONFIG.replace('KE = ["ke", "bulk"]', 'KE = ["kenya"]'))
    with pytest.raises(RouteError, match=r"^routes\.world: names account 'kenya'"):
        accounts_from_config(raw)


def test_producers_without_the_file_read_the_routes_workers_published(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMSBULK_CONFIG", raising=False)
    redis_client.hset(keys.ACCOUNTS, mapping={"bulk": "sendbulk\t\t", "ke": "sendbulk\t\t"})
    world = routes(world=WORLD)["world"]
    # A name published as both (a worker of another config) is the account.
    redis_client.hset(keys.ROUTES, mapping={"world": world.to_json(), "bulk": world.to_json()})
    accounts = load_accounts(redis_client)
    assert set(accounts) == {"bulk", "ke"} and accounts.routes == {"world": world}


# --- validation ---------------------------------------------------------------------


def book(*infos: AccountInfo, route: dict[str, Any] | None = None) -> Accounts:
    table = {"world": route or {"default_region": "RO", "accounts": [a.name for a in infos]}}
    names = [a.name for a in infos]
    return Accounts({a.name: a for a in infos}, parse_routes({"routes": table}, names))


TEXT = AccountInfo("bulk", "sendbulk")
OTP = AccountInfo("otp", "uspeedo", facts=TEMPLATE)  # needs a sender; has none
OTP_SENDER = AccountInfo("otp2", "uspeedo", sender="Shop", facts=TEMPLATE)


def refusal(job: dict[str, Any], accounts: Accounts) -> list[dict[str, Any]]:
    with pytest.raises(JobRefused) as refused:
        validate_job({"provider": "world", **job}, accounts)
    return refused.value.errors


def test_a_route_job_every_account_can_send_is_accepted() -> None:
    accounts = book(TEXT, OTP_SENDER)
    job = {"text": "hi", "template_id": "T1", "messages": [{"to": "0712345678"}]}
    assert validate_job({"provider": "world", **job}, accounts).provider == "world"
    # A route of template accounts only needs no text.
    only = book(OTP_SENDER)
    assert validate_job({"provider": "world", "template_id": "T1", "messages": [{"to": "1"}]}, only)


def test_a_route_job_one_account_cannot_send_is_refused_naming_provider_and_the_account() -> None:
    errors = refusal({"text": "hi", "messages": [{"to": "0712345678"}]}, book(TEXT, OTP))
    assert [e["field"] for e in errors] == ["provider", "provider"]
    assert "account otp (uspeedo)" in errors[0]["msg"] and "template_id" in errors[0]["msg"]
    assert "account otp (uspeedo)" in errors[1]["msg"] and "sender" in errors[1]["msg"]
    # The job's sender is enough for the second rule.
    errors = refusal(
        {"text": "hi", "sender": "Me", "messages": [{"to": "0712345678"}]}, book(TEXT, OTP)
    )
    assert [e["field"] for e in errors] == ["provider"] and "template_id" in errors[0]["msg"]


def test_a_route_with_a_text_account_needs_every_message_to_have_a_text() -> None:
    accounts = book(OTP_SENDER, TEXT)
    errors = refusal(
        {"template_id": "T1", "messages": [{"to": "1", "text": "x"}, {"to": "2"}]}, accounts
    )
    assert [e["field"] for e in errors] == ["provider", "messages[1].text"]
    assert "account bulk (sendbulk)" in errors[0]["msg"] and "messages[1]" in errors[0]["msg"]


def test_an_account_of_a_country_list_is_checked_too() -> None:
    route = {"default_region": "RO", "accounts": ["bulk"], "countries": {"US": ["otp"]}}
    errors = refusal({"text": "hi", "messages": [{"to": "1"}]}, book(TEXT, OTP, route=route))
    assert {e["field"] for e in errors} == {"provider"} and "account otp" in errors[0]["msg"]


def test_a_registry_route_naming_an_account_no_worker_published_is_refused() -> None:
    accounts = Accounts({"bulk": TEXT}, {"world": routes(world=WORLD)["world"]})
    errors = refusal({"text": "hi", "messages": [{"to": "1"}]}, accounts)
    assert errors == [
        {
            "field": "provider",
            "msg": "route world: account ke is not a known account",
            "type": "unknown",
        }
    ]


def test_an_unknown_name_is_the_unknown_provider_error_naming_routes_too() -> None:
    with pytest.raises(JobRefused) as refused:
        validate_job({"provider": "mars", "text": "hi", "messages": [{"to": "1"}]}, book(TEXT))
    assert refused.value.errors == [
        {
            "field": "provider",
            "msg": "unknown provider (accounts: bulk; routes: world)",
            "type": "unknown",
        }
    ]


# --- estimate -----------------------------------------------------------------------


def test_each_recipient_is_priced_at_its_first_account_by_region(config: Path) -> None:
    accounts = load_accounts(None, str(config), {"sendbulk": KindInfo(), "gosms": KindInfo()})
    messages = [
        {"to": "0712345678"},  # RO by the route's default region -> ro
        {"to": "+254712345678", "text": "x" * 161},  # KE -> ke, two parts
        {"to": "+12025550123"},  # US: no list -> accounts
        {"to": "not a number"},  # unparseable -> accounts, counted as sent
    ]
    job = validate_job({"provider": "world", "text": "hi", "messages": messages}, accounts)
    result = estimate_job(job, accounts)
    assert result.provider == "world" and not result.template
    shown = {
        name: (each.messages, each.parts, each.cost, each.currency)
        for name, each in result.accounts.items()
    }
    assert shown == {
        "ro": (1, 1, "0.035", "EUR"),
        "ke": (1, 2, "0.04", "EUR"),
        "bulk": (2, 2, "0.02", "EUR"),
    }
    assert (result.total.messages, result.total.parts) == (4, 5)
    assert (result.total.cost, result.total.currency) == ("0.095", "EUR")


def test_a_route_over_currencies_has_no_single_total_cost() -> None:
    usd = AccountInfo("us", "sendbulk", price_per_part=Decimal("0.1"), currency="USD")
    eur = AccountInfo("eu", "sendbulk", price_per_part=Decimal("0.1"), currency="EUR")
    route = {"default_region": "RO", "accounts": ["eu"], "countries": {"US": ["us"]}}
    accounts = book(eur, usd, route=route)
    messages = [{"to": "0712345678"}, {"to": "+12025550123"}]
    result = estimate_job(
        validate_job({"provider": "world", "text": "hi", "messages": messages}, accounts), accounts
    )
    assert (result.total.cost, result.total.currency) == (None, None)
    assert {n: (a.cost, a.currency) for n, a in result.accounts.items()} == {
        "eu": ("0.1", "EUR"),
        "us": ("0.1", "USD"),
    }


def test_the_command_prints_the_breakdown_by_account(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "job.json"
    path.write_text(
        json.dumps({"provider": "world", "text": "hi", "messages": [{"to": "0712345678"}]})
    )
    assert main(["estimate", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["accounts"] == {
        "ro": {"messages": 1, "parts": 1, "cost": "0.035", "currency": "EUR"}
    }
    # A one-account job has its one entry.
    path.write_text(json.dumps({"provider": "ke", "text": "hi", "messages": [{"to": "1"}]}))
    assert main(["estimate", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["accounts"] == {
        "ke": {"messages": 1, "parts": 1, "cost": "0.02", "currency": "EUR"}
    }


# --- status ------------------------------------------------------------------------------


def job_hash(provider: str, **counters: int) -> dict[bytes, bytes]:
    fields = {
        b"total": b"10",
        b"spec": json.dumps({"provider": provider}).encode(),
        b"state": b"running",
        b"created_at": b"1700000000",
    }
    return fields | {name.encode(): str(n).encode() for name, n in counters.items()}


FINAL_ZERO = dict.fromkeys(["accepted", "rejected", "failed", "expired", "cancelled", "unknown"], 0)


def test_a_route_jobs_status_counts_final_recipients_per_account() -> None:
    fields = job_hash("world", **{"n:a": 5, "n:f": 1, "a:ro:a": 3, "a:bulk:a": 2, "a:bulk:f": 1})
    status = status_from_hash("j", fields)
    assert status.accounts == {
        "ro": {**FINAL_ZERO, "accepted": 3},
        "bulk": {**FINAL_ZERO, "accepted": 2, "failed": 1},
    }
    assert status.counts["pending"] == 4


def test_a_one_account_jobs_status_has_its_account_with_the_jobs_counts() -> None:
    status = status_from_hash("j", job_hash("bulk", **{"n:a": 5, "n:u": 2}))
    assert status.accounts == {"bulk": {**FINAL_ZERO, "accepted": 5, "unknown": 2}}


def test_smsbulk_status_shows_the_per_account_counts(
    config: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    producer = Producer(redis_url)
    try:
        body = {"job_id": "r-1", "provider": "world", "text": "hi", "messages": [{"to": "1"}]}
        producer.submit(body)
        producer.redis.hset(keys.job("r-1"), mapping={"n:a": 1, "a:ke:a": 1})
    finally:
        producer.close()
    assert main(["--redis-url", redis_url, "status", "r-1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["accounts"] == {"ke": {**FINAL_ZERO, "accepted": 1}}


# --- retry's reset ------------------------------------------------------------------------


def test_the_reset_takes_a_route_recipient_off_its_accounts_counter(
    redis_client: redis.Redis,
) -> None:
    job, block = keys.job("r-2"), keys.outcomes("r-2", 0)
    redis_client.hset(
        job, mapping={"retry": '["a"]', "retry_next": 0, "n:a": 3, "a:bulk:a": 2, "a:ro:a": 1}
    )
    redis_client.hset(
        block,
        mapping={
            0: '["a","+40712345678",null,1,null,null,null,null,1,1.0,"bulk"]',
            1: '["a","+40712345679",null,1,null,null,null,null,1,1.0,"ro"]',
            2: '["a","+40712345680",null,1,null,null,null,null,1,1.0,"bulk"]',
            3: '["f","+40712345681",null,1,null,null,null,null,1,1.0,"bulk"]',
        },
    )
    script = scripts.script("reset_outcomes")
    assert script(keys=[job, block], args=[0, 2], client=redis_client) == 3
    counters = redis_client.hmget(job, ["n:a", "a:bulk:a", "a:ro:a"])
    assert counters == [b"0", b"0", b"0"]
    assert json.loads(redis_client.hget(block, "1") or b"")[0] == "p"


def test_the_reset_of_a_one_account_jobs_outcome_has_no_account_to_decrement(
    redis_client: redis.Redis,
) -> None:
    job, block = keys.job("r-3"), keys.outcomes("r-3", 0)
    redis_client.hset(job, mapping={"retry": '["f"]', "retry_next": 0, "n:f": 1})
    redis_client.hset(block, "0", '["f","+40712345678",null,1,null,null,null,null,1,1.0]')
    script = scripts.script("reset_outcomes")
    assert script(keys=[job, block], args=[0, 2], client=redis_client) == 1
    fields = redis_client.hgetall(job)
    assert fields[b"n:f"] == b"0" and not any(k.startswith(b"a:") for k in fields)


# --- the documented examples ------------------------------------------------------------


def test_the_readmes_and_the_example_files_routes_load() -> None:
    import tomllib

    from tests.paths import ROOT

    readme = (ROOT / "README.md").read_text().split("## Routes and failover", 1)[1]
    example = tomllib.loads(readme.split("```toml", 1)[1].split("```", 1)[0])
    world = accounts_from_config(example).routes["world"]
    assert [world.accounts_for(r)[0] for r in ("RO", "KE", "US", "FR")] == [
        "ro",
        "ke",
        "us",
        "bulk",
    ]
    shipped = tomllib.loads((ROOT / "config" / "providers.example.toml").read_text())
    assert accounts_from_config(shipped).routes["world"].every_account() == ["bulk", "ro", "voip"]


def test_the_openapi_document_describes_the_status_accounts() -> None:
    from producer.api.app import RetryRequest
    from producer.api.openapi import openapi_document

    schema = openapi_document(RetryRequest)["components"]["schemas"]["JobStatus"]
    answer = status_from_hash("j", job_hash("world", **{"n:a": 1, "a:ro:a": 1}))
    dumped = answer.model_dump(mode="json")
    assert "accounts" in schema["required"]
    assert set(schema["required"]) <= set(dumped) <= set(schema["properties"])
    accounts = schema["properties"]["accounts"]["additionalProperties"]
    assert set(dumped["accounts"]["ro"]) <= set(accounts["propertyNames"]["enum"])
