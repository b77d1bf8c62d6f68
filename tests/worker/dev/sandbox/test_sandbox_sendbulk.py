"""SendBulk sandbox: the document's request and answer shapes, and every refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from worker.dev.sandbox.app import SANDBOX_API_KEY, SANDBOX_PARTNER_ID, SANDBOX_SHORTCODE

Client = TestClient[web.Request, web.Application]
PATH = "/api/services/sendbulk"


def item(clientsmsid: int, mobile: str, message: str = "Hello", **changes: Any) -> dict[str, Any]:
    """One smslist entry, keys in the order of the document's first sample."""
    entry: dict[str, Any] = {
        "partnerID": SANDBOX_PARTNER_ID,
        "apikey": SANDBOX_API_KEY,
        "pass_type": "plain",
        "clientsmsid": clientsmsid,
        "mobile": mobile,
        "message": message,
        "shortcode": SANDBOX_SHORTCODE,
    }
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not ...}


def bulk(*items: dict[str, Any]) -> dict[str, Any]:
    return {"count": len(items), "smslist": list(items)}


def test_document_example_is_accepted_and_answered_in_the_documented_shape(sandbox, probe):
    # The document's request: the second item's keys in its own order.
    second = item(1002, "254700000002", "Second message")
    second = {
        k: second[k]
        for k in (
            "partnerID",
            "apikey",
            "pass_type",
            "mobile",
            "clientsmsid",
            "message",
            "shortcode",
        )
    }
    body = {"count": 2, "smslist": [item(1001, "254700000001", "First message"), second]}

    async def scenario(client: Client) -> None:
        response = await client.post(PATH, json=body)
        assert response.status == 200
        answer = await response.json()
        assert list(answer) == ["responses"]
        first, other = answer["responses"]
        for entry, (mobile, clientsmsid) in zip(
            (first, other), (("254700000001", 1001), ("254700000002", 1002)), strict=True
        ):
            assert set(entry) == {
                "response-code",
                "response-description",
                "mobile",
                "messageid",
                "clientsmsid",
                "networkid",
            }
            assert entry["response-code"] == 200
            assert entry["response-description"] == "Success"
            assert entry["mobile"] == mobile
            assert entry["clientsmsid"] == clientsmsid
            assert entry["networkid"] == 1
            assert isinstance(entry["messageid"], str) and entry["messageid"]
        assert first["messageid"] != other["messageid"]

        sent = await probe.sent(client, "sendbulk")
        assert [(r["number"], r["client_id"], r["text"], r["sender"]) for r in sent] == [
            ("254700000001", 1001, "First message", SANDBOX_SHORTCODE),
            ("254700000002", 1002, "Second message", SANDBOX_SHORTCODE),
        ]
        assert [r["message_id"] for r in sent] == [first["messageid"], other["messageid"]]
        stats = await probe.stats(client)
        assert stats["items"] == 2 and stats["processed_requests"] == 1
        assert stats["by_kind"] == {"sendbulk": 2} and stats["errors"] == 0

    sandbox(scenario)


async def _refused(
    client: Client,
    probe: Any,
    data: bytes | str,
    code: int,
    status: int = 400,
    content_type: str = "application/json",
) -> str:
    response = await client.post(PATH, data=data, headers={"Content-Type": content_type})
    assert response.status == status
    answer = await response.json()
    assert set(answer) == {"response-code", "response-description"}
    assert answer["response-code"] == code
    stats = await probe.stats(client)
    assert stats["items"] == 0 and stats["errors"] == 1
    assert stats["last_error"].startswith(f"sendbulk: {code}")
    description: str = answer["response-description"]
    return description


def test_count_must_match_the_list_length(sandbox, probe):
    body = {"count": 3, "smslist": [item(1, "254700000001"), item(2, "254700000002")]}

    async def scenario(client: Client) -> None:
        text = await _refused(client, probe, json.dumps(body), 1002)
        assert text == "count (3) does not match smslist length (2)"

    sandbox(scenario)


def test_a_key_given_twice_is_refused_like_the_documents_second_sample(sandbox, probe):
    raw = json.dumps(bulk(item(1, "254700000001")))
    raw = raw.replace('"shortcode": "SANDBOX"', '"shortcode": "SANDBOX", "pass_type": "plain"')

    async def scenario(client: Client) -> None:
        text = await _refused(client, probe, raw, 1004)
        assert "pass_type" in text

    sandbox(scenario)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (bulk(item(1, "254700000001", extra="x")), "smslist[0]: unknown key(s) extra"),
        (bulk(item(1, "254700000001", shortcode=...)), "smslist[0]: missing key(s) shortcode"),
        ({**bulk(item(1, "254700000001")), "sender": "x"}, "body: unknown key(s) sender"),
        ({"smslist": [item(1, "254700000001")]}, "body: missing key(s) count"),
    ],
)
def test_missing_and_unknown_keys_are_refused(sandbox, probe, body, expected):
    async def scenario(client: Client) -> None:
        assert await _refused(client, probe, json.dumps(body), 1005) == expected

    sandbox(scenario)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"clientsmsid": "1"}, "smslist[0].clientsmsid must be an integer"),
        ({"clientsmsid": True}, "smslist[0].clientsmsid must be an integer"),
        ({"clientsmsid": 1.0}, "smslist[0].clientsmsid must be an integer"),
        ({"mobile": 254700000001}, "smslist[0].mobile must be a string"),
        ({"apikey": None}, "smslist[0].apikey must be a string"),
        ({"pass_type": "md5"}, 'smslist[0].pass_type must be "plain"'),
        ({"message": ""}, "smslist[0].message must not be empty"),
    ],
)
def test_fields_of_the_wrong_type_or_value_are_refused(sandbox, probe, changes, expected):
    body = bulk(item(1, "254700000001"))
    body["smslist"][0].update(changes)

    async def scenario(client: Client) -> None:
        assert await _refused(client, probe, json.dumps(body), 1007) == expected

    sandbox(scenario)


def test_count_must_be_an_integer(sandbox, probe):
    body = {"count": "1", "smslist": [item(1, "254700000001")]}

    async def scenario(client: Client) -> None:
        assert await _refused(client, probe, json.dumps(body), 1007) == "count must be an integer"

    sandbox(scenario)


@pytest.mark.parametrize("size", [0, 1001])
def test_list_sizes_outside_1_to_1000_are_refused(sandbox, probe, size):
    body = bulk(*(item(i, f"2547{i:08d}") for i in range(size)))

    async def scenario(client: Client) -> None:
        text = await _refused(client, probe, json.dumps(body), 1003)
        assert text == f"smslist must hold 1 to 1000 items, not {size}"

    sandbox(scenario)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ("{not json", "application/json"),
        ('{"count": NaN, "smslist": []}', "application/json"),
        ("[]", "application/json"),
        (json.dumps(bulk(item(1, "254700000001"))), "text/plain"),
    ],
)
def test_malformed_bodies_are_refused(sandbox, probe, data, content_type):
    async def scenario(client: Client) -> None:
        await _refused(client, probe, data, 1001, content_type=content_type)

    sandbox(scenario)


@pytest.mark.parametrize("key", ["partnerID", "apikey", "shortcode"])
def test_bad_credentials_get_the_documented_answer(sandbox, probe, key):
    body = bulk(item(1, "254700000001", **{key: "wrong"}))

    async def scenario(client: Client) -> None:
        response = await client.post(PATH, json=body)
        assert response.status == 200
        assert await response.json() == {
            "response-code": 1006,
            "response-description": "Invalid credentials",
        }
        assert (await probe.stats(client))["items"] == 0

    sandbox(scenario)


def test_credentials_of_later_items_are_ignored_per_the_documents_note(sandbox, probe):
    body = bulk(item(1, "254700000001"), item(2, "254700000002", apikey="other", shortcode="X"))

    async def scenario(client: Client) -> None:
        response = await client.post(PATH, json=body)
        codes = [r["response-code"] for r in (await response.json())["responses"]]
        assert codes == [200, 200]
        assert [r["sender"] for r in await probe.sent(client)] == [SANDBOX_SHORTCODE] * 2

    sandbox(scenario)


def test_an_invalid_mobile_fails_that_item_only(sandbox, probe):
    body = bulk(item(1, "254700000001"), item(2, "+254700000002"), item(3, "1234567"))

    async def scenario(client: Client) -> None:
        response = await client.post(PATH, json=body)
        assert response.status == 200
        first, plus, short = (await response.json())["responses"]
        assert first["response-code"] == 200
        assert plus == {
            "response-code": 1009,
            "response-description": "Invalid mobile",
            "mobile": "+254700000002",
            "clientsmsid": 2,
        }
        assert short["response-code"] == 1009 and short["clientsmsid"] == 3
        assert [r["number"] for r in await probe.sent(client)] == ["254700000001"]

    sandbox(scenario)


def test_a_full_request_of_1000_is_recorded(sandbox, probe):
    body = bulk(*(item(i, f"2547{i:08d}", f"text {i}") for i in range(1000)))

    async def scenario(client: Client) -> None:
        response = await client.post(PATH, json=body)
        answers = (await response.json())["responses"]
        assert [a["clientsmsid"] for a in answers] == list(range(1000))
        assert len({a["messageid"] for a in answers}) == 1000
        stats = await probe.stats(client)
        assert stats["items"] == 1000 and stats["max_items_per_request"] == 1000
        assert stats["duplicates"] == 0

    sandbox(scenario)
