"""VoIP Communications sandbox: the document's example, send_log entries, refusals."""

from __future__ import annotations

import base64

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from worker.dev.sandbox.app import SANDBOX_VOIP_KEY, SANDBOX_VOIP_PASSWORD, SandboxSettings

Client = TestClient[web.Request, web.Application]
PATH = "/api-v2/index.php/sms/send"


def basic(user: str, password: str) -> dict[str, str]:
    # Not aiohttp.BasicAuth: deprecated in aiohttp 3.14 (a warning, so an error here).
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


AUTH = basic(SANDBOX_VOIP_KEY, SANDBOX_VOIP_PASSWORD)
FORM = "application/x-www-form-urlencoded"
ENTRY_KEYS = ["code", "code_desc", "from", "to", "country", "msg", "delivery_date", "sale",
              "type", "status", "smsid"]  # fmt: skip


def test_document_example_is_answered_in_the_documented_shape(sandbox, probe):
    form = {"from": "17134567890", "to": "12812345678", "msg": "It is a SMS message",
            "delivery_date": "2099-10-01 00:00"}  # fmt: skip

    async def scenario(client: Client) -> None:
        response = await client.post(PATH, data=form, headers=AUTH)
        assert response.status == 200
        answer = await response.json()
        assert list(answer) == ["send_log"]
        (entry,) = answer["send_log"]
        assert list(entry) == ENTRY_KEYS
        smsid = entry.pop("smsid")
        assert entry == {"code": 200, "code_desc": "", "from": "17134567890",
                         "to": "12812345678", "country": "US", "msg": "It is a SMS message",
                         "delivery_date": "2099-10-01 00:00:00", "sale": 0.01,
                         "type": "2WAY", "status": "SCHEDULED"}  # fmt: skip
        (sent,) = await probe.sent(client, "voipcomm")
        assert (sent["number"], sent["message_id"], sent["sender"]) == (
            "12812345678",
            smsid,
            "17134567890",
        )

    sandbox(scenario)


def test_bulk_send_to_many_numbers(sandbox, probe):
    text = "z" * 161  # two parts of 153

    async def scenario(client: Client) -> None:
        data = {"to": "40712345678,447700900123,1234", "msg": text}
        answer = await (await client.post(PATH, data=data, headers=AUTH)).json()
        ro, gb, bad = answer["send_log"]
        assert (ro["to"], ro["country"], ro["type"], ro["status"]) == (
            "40712345678",
            "RO",
            "BULKSMS",
            "SENT",
        )
        assert ro["from"] == "" and ro["sale"] == 0.02 and gb["country"] == "GB"
        assert ro["smsid"] != gb["smsid"]
        assert bad["code"] == 400 and bad["status"] == "FAILED" and bad["smsid"] == ""
        assert list(bad) == ENTRY_KEYS
        sent = await probe.sent(client)
        assert [(r["number"], r["sender"]) for r in sent] == [
            ("40712345678", None),
            ("447700900123", None),
        ]
        assert (await probe.stats(client))["max_items_per_request"] == 3

    sandbox(scenario)


@pytest.mark.parametrize(
    "auth",
    [{}, basic(SANDBOX_VOIP_KEY, "wrong"), basic("x", "y"), {"Authorization": "Basic %%%"}],
)
def test_bad_credentials_get_401(sandbox, probe, auth):
    async def scenario(client: Client) -> None:
        response = await client.post(PATH, data={"to": "12812345678", "msg": "Hi"}, headers=auth)
        assert response.status == 401
        assert await response.json() == {"code": 401, "code_desc": "Invalid api credentials"}
        assert (await probe.stats(client))["items"] == 0

    sandbox(scenario)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("to=12812345678,12812345678&msg=Hi", "number 12812345678 given twice in to"),
        ("to=12812345678&to=12812345679&msg=Hi", "field to given twice"),
        ("to=12812345678&msg=Hi&sender=x", "unknown field sender"),
        ("msg=Hi", "to is required"),
        ("to=12812345678", "msg is required"),
        ("to=12812345678&msg=", "msg is required"),
        ("to=%2B12812345678&msg=Hi", "to must be numbers of digits separated by commas"),
        ("to=12812345678,&msg=Hi", "to must be numbers of digits separated by commas"),
        ("to=12812345678,%2012812345679&msg=Hi", "to must be numbers"),
        ("to=12812345678&msg=Hi&from=Shop", "from must be one of your numbers"),
        ("to=12812345678&msg=Hi&delivery_date=2030-13-01 10:00", "delivery_date must be"),
        ("to=12812345678&msg=Hi&delivery_date=tomorrow", "delivery_date must be"),
        ("to=12812345678&msg=Hi&delivery_date=2030-01-01 25:00", "delivery_date must be"),
        ("to=12812345678&&msg=Hi", "not form-encoded"),
    ],
)
def test_refusals(sandbox, probe, raw, problem):
    async def scenario(client: Client) -> None:
        headers = {**AUTH, "Content-Type": FORM}
        response = await client.post(PATH, data=raw, headers=headers)
        assert response.status == 400
        answer = await response.json()
        assert answer["code"] == 400 and problem in answer["code_desc"]
        stats = await probe.stats(client)
        assert stats["items"] == 0 and stats["errors"] == 1
        assert stats["last_error"].startswith("voipcomm: 400")

    sandbox(scenario)


@pytest.mark.parametrize(
    ("when", "scheduled"),
    [
        ("2099-01-01", "2099-01-01 00:00:00"),
        ("2099-01-01T10:00", "2099-01-01 10:00:00"),
        ("2099-01-01 10:00:00+02:00", "2099-01-01 08:00:00"),
        ("2000-01-01 10:00", None),
    ],
)
def test_other_valid_date_formats_are_accepted(sandbox, probe, when, scheduled):
    """The document: "YYYY-MM-DD HH:MM or any valid date format"."""

    async def scenario(client: Client) -> None:
        data = {"to": "12812345678", "msg": "Hi", "delivery_date": when}
        response = await client.post(PATH, data=data, headers=AUTH)
        assert response.status == 200
        (entry,) = (await response.json())["send_log"]
        assert entry["code"] == 200
        if scheduled is None:
            assert entry["status"] == "SENT"
        else:
            assert (entry["status"], entry["delivery_date"]) == ("SCHEDULED", scheduled)
        assert (await probe.stats(client))["errors"] == 0

    sandbox(scenario)


def test_json_bodies_are_refused(sandbox):
    async def scenario(client: Client) -> None:
        response = await client.post(PATH, json={"to": "12812345678", "msg": "Hi"}, headers=AUTH)
        assert response.status == 400
        assert "Content-Type" in (await response.json())["code_desc"]

    sandbox(scenario)


def test_number_limit_is_the_max_batch_items_knob(sandbox):
    async def scenario(client: Client) -> None:
        data = {"to": "12812345671,12812345672", "msg": "Hi"}
        assert (await client.post(PATH, data=data, headers=AUTH)).status == 200
        data = {"to": "12812345671,12812345672,12812345673", "msg": "Hi"}
        response = await client.post(PATH, data=data, headers=AUTH)
        assert response.status == 400
        assert (await response.json())["code_desc"] == "to holds 3 numbers, over 2"

    sandbox(scenario, SandboxSettings(max_batch_items=2))
