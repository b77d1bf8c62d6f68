"""Opt-outs over HTTP and STOP replies (docs/INTERFACE.md, "Guards"): a real
aiohttp server on 127.0.0.1 against the session's Valkey, no worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import structlog

from producer import optouts
from producer.api.app import create_app
from producer.api.optouts import MAX_NUMBERS
from producer.core import keys
from tests.producer.api.test_app import TOKEN, ApiServer


@pytest.fixture
def api(redis_url: str, config_file: Path) -> Iterator[ApiServer]:
    server = ApiServer(create_app(TOKEN, redis_url))
    try:
        yield server
    finally:
        server.stop()


def listed(redis_client: redis.Redis) -> list[str]:
    return sorted(m.decode() for m in redis_client.smembers(keys.OPTOUT))  # type: ignore[union-attr]


def fields(answer: Any) -> dict[str, str]:
    assert answer.status == 422, answer.body
    return {e["field"]: e["msg"] for e in answer.json()["errors"]}


# --- /v1/optouts -----------------------------------------------------------------


def test_add_list_and_remove_numbers_in_any_form(api: ApiServer, redis_client: redis.Redis) -> None:
    assert api("GET", "/v1/optouts").json() == {"numbers": [], "count": 0}
    body = {"numbers": ["0712345678", "+40 722 123 456", "0040733123456"], "region": "RO"}
    answer = api("POST", "/v1/optouts", body)
    assert answer.status == 200
    expected = ["+40712345678", "+40722123456", "+40733123456"]
    assert answer.json() == {"numbers": expected, "added": 3}
    # The same numbers again, written otherwise: nothing new.
    again = api("POST", "/v1/optouts", {"numbers": ["+40712345678", "40722123456"], "region": "RO"})
    assert again.json()["added"] == 0
    assert api("GET", "/v1/optouts").json() == {"numbers": expected, "count": 3}
    assert listed(redis_client) == expected

    removed = api("DELETE", "/v1/optouts/+40712345678")
    assert removed.status == 200 and removed.json() == {"e164": "+40712345678", "removed": True}
    encoded = api("DELETE", "/v1/optouts/%2B40722123456")  # + percent-encoded
    assert encoded.json() == {"e164": "+40722123456", "removed": True}
    assert api("DELETE", "/v1/optouts/+40712345678").json()["removed"] is False
    assert api("GET", "/v1/optouts").json() == {"numbers": ["+40733123456"], "count": 1}


def test_international_numbers_need_no_region(api: ApiServer) -> None:
    answer = api("POST", "/v1/optouts", {"numbers": ["+12025550143", "0044 7911 123456"]})
    assert answer.json() == {"numbers": ["+12025550143", "+447911123456"], "added": 2}


def test_one_invalid_number_refuses_the_body_naming_each_bad_one(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    numbers = ["+40712345678", "0722123456", "not-a-number", "+40 1", "x" * 65]
    errors = fields(api("POST", "/v1/optouts", {"numbers": numbers}))
    assert set(errors) == {"numbers[1]", "numbers[2]", "numbers[3]", "numbers[4]"}
    assert "region" in errors["numbers[1]"]
    assert "0722123456" not in str(errors) and "not-a-number" not in str(errors)
    assert listed(redis_client) == []  # nothing of it was added


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"numbers": []}, "numbers"),
        ({"numbers": ["+40712345678"] * (MAX_NUMBERS + 1)}, "numbers"),
        ({"numbers": "+40712345678"}, "numbers"),
        ({}, "numbers"),
        ({"numbers": ["0712345678"], "region": "XX"}, "region"),
        ({"numbers": ["0712345678"], "region": "romania"}, "region"),
        ({"numbers": ["+40712345678"], "extra": 1}, "extra"),
    ],
)
def test_a_bad_optouts_body_is_422_naming_the_field(
    api: ApiServer, redis_client: redis.Redis, body: dict[str, Any], field: str
) -> None:
    assert field in fields(api("POST", "/v1/optouts", body))
    assert listed(redis_client) == []


def test_a_body_that_is_not_json_is_422_naming_the_body(api: ApiServer) -> None:
    assert "body" in fields(api("POST", "/v1/optouts", b"numbers=1"))


def test_the_most_numbers_a_post_takes_are_all_added(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    numbers = [f"+407{20000000 + i}" for i in range(MAX_NUMBERS)]
    answer = api("POST", "/v1/optouts", {"numbers": numbers})
    assert answer.status == 200 and answer.json()["added"] == MAX_NUMBERS
    assert redis_client.scard(keys.OPTOUT) == MAX_NUMBERS


@pytest.mark.parametrize("path", ["0712345678", "40712345678", "+40%20712345678", "+4071234", "x"])
def test_delete_takes_only_an_e164_number(
    api: ApiServer, redis_client: redis.Redis, path: str
) -> None:
    redis_client.sadd(keys.OPTOUT, "+40712345678")
    assert set(fields(api("DELETE", f"/v1/optouts/{path}"))) == {"e164"}
    assert listed(redis_client) == ["+40712345678"]


# --- /v1/inbound -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        ("STOP", "STOP"),
        ("stop", "STOP"),
        ("Stop.", "STOP"),
        ("  stopall please", "STOPALL"),
        ("Unsubscribe", "UNSUBSCRIBE"),
        ("cancel", "CANCEL"),
        ("END", "END"),
        ("quit!", "QUIT"),
    ],
)
def test_a_stop_reply_opts_its_number_out(
    api: ApiServer, redis_client: redis.Redis, text: str, keyword: str
) -> None:
    answer = api("POST", "/v1/inbound", {"from": "+40712345678", "text": text})
    assert answer.status == 200
    assert answer.json() == {"from": "+40712345678", "opted_out": True, "keyword": keyword}
    assert listed(redis_client) == ["+40712345678"]


@pytest.mark.parametrize("text", ["Thanks!", "please stop", "stopped", "", "STOP2", "yes STOP"])
def test_any_other_reply_opts_nobody_out(
    api: ApiServer, redis_client: redis.Redis, text: str
) -> None:
    answer = api("POST", "/v1/inbound", {"from": "+40712345678", "text": text})
    assert answer.json() == {"from": "+40712345678", "opted_out": False, "keyword": None}
    assert listed(redis_client) == []


def test_a_reply_from_a_national_number_is_read_with_region(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    answer = api("POST", "/v1/inbound", {"from": "0712 345 678", "text": "stop", "region": "RO"})
    assert answer.json()["from"] == "+40712345678" and answer.json()["opted_out"] is True
    assert listed(redis_client) == ["+40712345678"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"from": "0712345678", "text": "STOP"}, "from"),  # national, no region
        ({"from": "+40 1", "text": "STOP"}, "from"),
        ({"from": "ACME", "text": "STOP"}, "from"),  # an alphanumeric sender
        ({"from": "", "text": "STOP"}, "from"),
        ({"text": "STOP"}, "from"),
        ({"from": "+40712345678"}, "text"),
        ({"from": "+40712345678", "text": "x" * 10_001}, "text"),
        ({"from": "0712345678", "text": "STOP", "region": "XX"}, "region"),
    ],
)
def test_a_bad_reply_is_422_naming_the_field(
    api: ApiServer, redis_client: redis.Redis, body: dict[str, Any], field: str
) -> None:
    errors = fields(api("POST", "/v1/inbound", body))
    assert field in errors
    assert "0712345678" not in str(errors)
    assert listed(redis_client) == []


def test_logs_carry_no_number_or_reply_text(api: ApiServer) -> None:
    with structlog.testing.capture_logs() as events:
        api("POST", "/v1/optouts", {"numbers": ["+40712345678"]})
        api("POST", "/v1/inbound", {"from": "+40722123456", "text": "STOP secret words"})
        api("DELETE", "/v1/optouts/+40712345678")
        api("GET", "/v1/optouts")
    logged = str(events)
    assert "4071234567" not in logged and "4072212345" not in logged and "secret" not in logged
    routes = {e.get("route") for e in events if e.get("event") == "request"}
    assert routes == {"/v1/optouts", "/v1/inbound", "/v1/optouts/{e164}"}


# --- the list's one definition ------------------------------------------------------

# (raw, region): the forms the CLI, the API and the workers read alike.
FORMS = [
    ("0712345678", "RO"), ("+40 722 123 456", None), ("0040733123456", None),
    ("40722123456", "RO"), ("(202) 555-0143", "US"), ("+1 202 555 0143", None),
    ("0151 23456789", "DE"), ("4915123456789", "DE"), ("+800 1234 5678", None),
    ("07911 123456", "GB"), ("+44 7911 123456", None), ("0722-123-456", "RO"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "region"), FORMS)
def test_a_listed_number_is_the_e164_the_workers_check(raw: str, region: str | None) -> None:
    from producer.phone import parse_number

    worker_form = parse_number(raw, region or "GB").e164  # the recipient's e164 in a pass
    assert optouts.to_e164(raw, region) == worker_form
    assert optouts.is_e164(worker_form)
