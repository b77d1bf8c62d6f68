"""Sandbox knobs, fault injection and inspection endpoints (driven through SendBulk)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from worker.dev.sandbox.app import (
    SANDBOX_API_KEY,
    SANDBOX_PARTNER_ID,
    SANDBOX_SHORTCODE,
    STATE,
    SandboxSettings,
)

Client = TestClient[web.Request, web.Application]
PATH = "/api/services/sendbulk"


def bulk(*mobiles: str, text: str = "Hello") -> dict[str, Any]:
    items = [
        {
            "partnerID": SANDBOX_PARTNER_ID,
            "apikey": SANDBOX_API_KEY,
            "pass_type": "plain",
            "clientsmsid": i,
            "mobile": mobile,
            "message": text,
            "shortcode": SANDBOX_SHORTCODE,
        }
        for i, mobile in enumerate(mobiles)
    ]
    return {"count": len(items), "smslist": items}


def test_fail_rate_1_answers_500_and_records_nothing(sandbox, probe):
    async def scenario(client: Client) -> None:
        response = await client.post(PATH, json=bulk("254700000001"))
        assert response.status == 500
        stats = await probe.stats(client)  # inspection is never faulted
        assert stats["requests"] == 1 and stats["processed_requests"] == 0
        assert stats["items"] == 0 and await probe.sent(client) == []

    sandbox(scenario, SandboxSettings(fail_rate=1.0))


def test_throttle_rate_1_answers_429_with_retry_after(sandbox, probe):
    async def scenario(client: Client) -> None:
        response = await client.post(PATH, json=bulk("254700000001"))
        assert response.status == 429
        assert response.headers["Retry-After"] == "1"
        stats = await probe.stats(client)
        assert stats["requests"] == 1 and stats["processed_requests"] == 0
        assert stats["items"] == 0

    sandbox(scenario, SandboxSettings(throttle_rate=1.0))


def test_throttle_next_answers_that_many_429s_with_the_retry_after_given(sandbox, probe):
    async def scenario(client: Client) -> None:
        settings = {"throttle_next": 2, "retry_after": "1e12"}
        assert (await client.post("/_sandbox/settings", json=settings)).status == 200
        statuses = []
        for _ in range(3):
            response = await client.post(PATH, json=bulk("254700000001"))
            statuses.append((response.status, response.headers.get("Retry-After")))
        assert statuses == [(429, "1e12"), (429, "1e12"), (200, None)]
        stats = await probe.stats(client)
        assert stats["requests"] == 3 and stats["processed_requests"] == 1
        knobs = await (await client.get("/_sandbox/settings")).json()
        assert knobs["throttle_next"] == 0

    sandbox(scenario)


def test_idle_close_s_closes_a_connection_left_idle_not_one_in_use(sandbox, probe):
    async def scenario(client: Client) -> None:
        # One kept-alive connection (the test client's pool) carries all three.
        for _ in range(3):
            assert (await client.post(PATH, json=bulk("254700000001"))).status == 200
        state = client.app[STATE]  # read in place: an inspection request would keep it busy
        deadline = time.monotonic() + 10
        while state.idle_closed == 0:
            assert time.monotonic() < deadline, "the idle connection was never closed"
            await asyncio.sleep(0.05)
        assert state.idle_closed == 1 and not state.idle_closes
        assert (await probe.stats(client))["idle_closed"] == 1

    # Long enough that the three requests never leave it idle that long, on
    # a loaded machine too (at 0.3 s, a slow moment closed it between two).
    sandbox(scenario, SandboxSettings(idle_close_s=1.0))


def test_timeout_rate_records_the_send_but_never_answers_in_time(sandbox, probe):
    async def scenario(client: Client) -> None:
        with pytest.raises(asyncio.TimeoutError):
            await client.post(
                PATH, json=bulk("254700000001"), timeout=aiohttp.ClientTimeout(total=0.2)
            )
        stats = await probe.stats(client)
        assert stats["processed_requests"] == 1 and stats["items"] == 1

    sandbox(scenario, SandboxSettings(timeout_rate=1.0, hang_s=0.5))


def test_malformed_rate_records_the_send_and_answers_non_json(sandbox, probe):
    async def scenario(client: Client) -> None:
        response = await client.post(PATH, json=bulk("254700000001"))
        assert response.status == 200
        assert response.content_type != "application/json"
        with pytest.raises(aiohttp.ContentTypeError):
            await response.json()
        assert (await probe.stats(client))["items"] == 1

    sandbox(scenario, SandboxSettings(malformed_rate=1.0))


def test_deep_rate_records_the_send_and_answers_json_too_deep_to_parse(sandbox, probe):
    async def scenario(client: Client) -> None:
        response = await client.post(PATH, json=bulk("254700000001"))
        assert response.status == 200
        assert response.content_type == "application/json"
        with pytest.raises(RecursionError):
            json.loads(await response.read())
        stats = await probe.stats(client)
        assert stats["items"] == 1 and stats["deep_answers"] == 1

    sandbox(scenario, SandboxSettings(deep_rate=1.0))


def test_latency_delays_every_answer(sandbox):
    async def scenario(client: Client) -> None:
        started = time.monotonic()
        response = await client.post(PATH, json=bulk("254700000001"))
        assert response.status == 200
        assert time.monotonic() - started >= 0.15

    sandbox(scenario, SandboxSettings(latency_ms=150))


def test_a_seed_makes_faults_repeatable(sandbox):
    runs: list[list[int]] = []

    async def scenario(client: Client) -> None:
        statuses = []
        for i in range(30):
            response = await client.post(PATH, json=bulk(f"2547000{i:05d}"))
            statuses.append(response.status)
        runs.append(statuses)

    for _ in range(2):
        sandbox(scenario, SandboxSettings(fail_rate=0.3, throttle_rate=0.3, seed=42))
    assert runs[0] == runs[1]
    assert {200, 429, 500} == set(runs[0])


def test_settings_change_knobs_at_run_time(sandbox):
    async def scenario(client: Client) -> None:
        knobs = await (await client.get("/_sandbox/settings")).json()
        assert knobs["fail_rate"] == 0.0 and "credentials" not in knobs
        response = await client.post("/_sandbox/settings", json={"fail_rate": 1, "seed": 3})
        assert response.status == 200
        assert (await response.json())["fail_rate"] == 1
        assert (await client.post(PATH, json=bulk("254700000001"))).status == 500
        await client.post("/_sandbox/settings", json={"fail_rate": 0})
        assert (await client.post(PATH, json=bulk("254700000001"))).status == 200

    sandbox(scenario)


@pytest.mark.parametrize(
    "body",
    [
        {"fail_rate": 1.5},
        {"fail_rate": "0.1"},
        {"latency_ms": -1},
        {"seed": 1.5},
        {"max_batch_items": 0},
        {"throttle_next": -1},
        {"throttle_next": 1.0},
        {"retry_after": ""},
        {"retry_after": 5},
        {"retry_after": "1\r\nSet-Cookie: x"},
        {"idle_close_s": -1},
        {"credentials": {}},
        {"nonsense": 1},
        [],
    ],
)
def test_invalid_settings_are_refused_and_change_nothing(sandbox, body):
    async def scenario(client: Client) -> None:
        response = await client.post("/_sandbox/settings", json=body)
        assert response.status == 400
        assert "error" in await response.json()
        knobs = await (await client.get("/_sandbox/settings")).json()
        assert knobs == {
            "latency_ms": 0.0,
            "fail_rate": 0.0,
            "throttle_rate": 0.0,
            "timeout_rate": 0.0,
            "malformed_rate": 0.0,
            "deep_rate": 0.0,
            "hang_s": 30.0,
            "seed": None,
            "max_batch_items": 1000,
            "throttle_next": 0,
            "retry_after": "1",
            "idle_close_s": 0.0,
            "fail_status": {},
        }

    sandbox(scenario)


def test_invalid_settings_fail_at_construction():
    with pytest.raises(ValueError, match="fail_rate"):
        SandboxSettings(fail_rate=2.0)


def test_stats_count_duplicates_per_number_across_requests(sandbox, probe):
    async def scenario(client: Client) -> None:
        await client.post(PATH, json=bulk("254700000001", "254700000002"))
        await client.post(PATH, json=bulk("254700000001"))
        await client.post(PATH, json=bulk("254700000001", "254700000003"))
        stats = await probe.stats(client)
        assert stats["items"] == 5 and stats["duplicates"] == 1
        assert stats["max_items_per_request"] == 2
        assert stats["requests"] == stats["processed_requests"] == 3

    sandbox(scenario)


def test_sent_and_rate_filter_by_kind_and_reset_clears(sandbox, probe):
    async def scenario(client: Client) -> None:
        await client.post(PATH, json=bulk("254700000001", "254700000002"))
        sent = await probe.sent(client, "sendbulk")
        assert [r["number"] for r in sent] == ["254700000001", "254700000002"]
        assert set(sent[0]) == {
            "kind", "number", "message_id", "client_id", "text", "sender", "t",
        }  # fmt: skip
        assert abs(sent[0]["t"] - time.time()) < 60
        assert await probe.sent(client, "gosms") == []
        rate = await (await client.get("/_sandbox/rate", params={"kind": "sendbulk"})).json()
        assert sum(rate["items_per_second"].values()) == 2
        assert sum(rate["requests_per_second"].values()) == 1
        assert all(int(second) > 1_600_000_000 for second in rate["items_per_second"])
        other = await (await client.get("/_sandbox/rate", params={"kind": "gosms"})).json()
        assert other == {"items_per_second": {}, "requests_per_second": {}}
        assert (await client.get("/_sandbox/sent", params={"kind": "nope"})).status == 400

        assert (await client.post("/_sandbox/reset")).status == 200
        stats = await probe.stats(client)
        assert stats["items"] == stats["requests"] == 0 and stats["by_kind"] == {}
        assert await probe.sent(client) == []

    sandbox(scenario)


def test_sent_streams_many_rows(sandbox, probe):
    async def scenario(client: Client) -> None:
        for start in range(0, 12_000, 1000):
            mobiles = [f"2547{n:08d}" for n in range(start, start + 1000)]
            assert (await client.post(PATH, json=bulk(*mobiles))).status == 200
        sent = await probe.sent(client, "sendbulk")
        assert len(sent) == 12_000
        assert len({r["message_id"] for r in sent}) == 12_000

    sandbox(scenario)


GOSMS_PATH = "/v1/message/send"


def test_fail_status_answers_every_request_of_its_kind_only(sandbox, probe):
    async def scenario(client: Client) -> None:
        for _ in range(3):
            response = await client.post(PATH, json=bulk("254700000001"))
            assert response.status == 503
            assert "Retry-After" not in response.headers
        stats = await probe.stats(client)
        assert stats["requests"] == 3 and stats["processed_requests"] == 0
        assert stats["items"] == 0 and await probe.sent(client) == []
        # Another kind is served as usual (its refusal of an empty body is its own).
        other = await client.post(GOSMS_PATH, json={})
        assert other.status != 503
        assert (await probe.stats(client))["processed_requests"] == 1
        # Changed at run time: 429 carries Retry-After; {} ends it.
        knobs = {"fail_status": {"sendbulk": 429}, "retry_after": "7"}
        assert (await client.post("/_sandbox/settings", json=knobs)).status == 200
        response = await client.post(PATH, json=bulk("254700000001"))
        assert response.status == 429 and response.headers["Retry-After"] == "7"
        assert (await client.post("/_sandbox/settings", json={"fail_status": {}})).status == 200
        assert (await client.post(PATH, json=bulk("254700000001"))).status == 200

    sandbox(scenario, SandboxSettings(fail_status={"sendbulk": 503}, fail_rate=0.0))


@pytest.mark.parametrize(
    "bad",
    [{"sendbulk": 200}, {"sendbulk": 600}, {"sendbulk": "503"}, {"nosuch": 503}, [503], 503],
)
def test_fail_status_refuses_bad_values_and_unknown_kinds(sandbox, bad):
    async def scenario(client: Client) -> None:
        response = await client.post("/_sandbox/settings", json={"fail_status": bad})
        assert response.status == 400
        settings = await (await client.get("/_sandbox/settings")).json()
        assert settings["fail_status"] == {}

    sandbox(scenario)


def test_fail_status_from_the_command_line() -> None:
    from worker.dev.sandbox.app import parse_fail_status

    assert parse_fail_status(["sendbulk=503", "gosms = 500"]) == {"sendbulk": 503, "gosms": 500}
    assert parse_fail_status([]) == {}
    for bad in (["sendbulk"], ["sendbulk=x"], ["nosuch=503"], ["sendbulk=200"]):
        with pytest.raises(ValueError):
            parse_fail_status(bad)
