"""GoSMS sandbox: the documents' single and batch examples, and every refusal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from worker.dev.sandbox.app import SANDBOX_GOSMS_KEY, SandboxSettings

Client = TestClient[web.Request, web.Application]
SINGLE = "/v1/message/send"
BATCH = "/v1/message/send-batch"
AUTH = {"X-Authorization": SANDBOX_GOSMS_KEY}


def test_document_single_example_is_answered_in_the_documented_shape(sandbox, probe):
    body = {"recipient": "0712345678", "message": "This is a test message."}

    async def scenario(client: Client) -> None:
        response = await client.post(SINGLE, json=body, headers=AUTH)
        assert response.status == 200
        answer = await response.json()
        assert list(answer) == ["success", "messageId", "balanceDeduction", "currency"]
        assert answer["success"] is True
        assert answer["balanceDeduction"] == "0.03" and answer["currency"] == "EUR"
        sent = await probe.sent(client, "gosms")
        assert len(sent) == 1
        assert sent[0]["number"] == "0712345678" and sent[0]["text"] == body["message"]
        assert sent[0]["message_id"] == answer["messageId"] and sent[0]["client_id"] is None

    sandbox(scenario)


def test_document_batch_example_is_answered_in_the_documented_shape(sandbox, probe):
    body = {
        "messages": [
            {"recipient": "0712345678", "message": "This is a test message."},
            {"recipient": "0712345678", "message": "This is another test message."},
        ]
    }

    async def scenario(client: Client) -> None:
        response = await client.post(BATCH, json=body, headers=AUTH)
        assert response.status == 200
        answer = await response.json()
        assert answer["success"] is True
        assert answer["message"] == "Message orders registered."
        assert answer["balanceDeduction"] == "0.06" and answer["currency"] == "EUR"
        first, second = answer["orderSummary"]
        for position, entry in enumerate((first, second)):
            assert list(entry) == ["arrayPosition", "amount", "recipient", "messageId"]
            assert entry["arrayPosition"] == position and entry["amount"] == 0.03
            assert entry["recipient"] == "0712345678"
        assert first["messageId"] != second["messageId"]
        sent = await probe.sent(client, "gosms")
        assert [(r["client_id"], r["text"]) for r in sent] == [
            (0, "This is a test message."),
            (1, "This is another test message."),
        ]

    sandbox(scenario)


def test_optional_fields_and_long_messages_are_priced_per_153_char_part(sandbox, probe):
    long_text = "x" * 307  # three parts of 153
    body = {
        "messages": [
            {
                "recipient": "40712345678",
                "message": long_text,
                "sender": "Shop",
                "scheduleDatetime": "2030-01-02T03:04:05.678Z",
                "validity": 60,
            },
            {
                "recipient": "00359888123456",
                "message": "y" * 160,
                "scheduleDatetime": "2030-01-02 03:04:05",
            },
        ]
    }

    async def scenario(client: Client) -> None:
        answer = await (await client.post(BATCH, json=body, headers=AUTH)).json()
        assert [e["amount"] for e in answer["orderSummary"]] == [0.09, 0.03]
        assert answer["balanceDeduction"] == "0.12"
        assert [r["sender"] for r in await probe.sent(client)] == ["Shop", None]

    sandbox(scenario)


@pytest.mark.parametrize("headers", [{}, {"X-Authorization": "wrong"}, {"Authorization": "x"}])
@pytest.mark.parametrize("path", [SINGLE, BATCH])
def test_bad_credentials_get_401(sandbox, probe, headers, path):
    body: Any = {"recipient": "0712345678", "message": "Hi"}
    if path == BATCH:
        body = {"messages": [body]}

    async def scenario(client: Client) -> None:
        response = await client.post(path, json=body, headers=headers)
        assert response.status == 401
        assert await response.json() == {"success": False, "message": "Invalid API key"}
        assert (await probe.stats(client))["items"] == 0

    sandbox(scenario)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"recipient": "0712345678"}, "body: missing message"),
        ({"recipient": "0712345678", "message": "Hi", "to": "x"}, "unknown field(s) to"),
        ({"recipient": "+40712345678", "message": "Hi"}, "recipient must be"),
        ({"recipient": "712345678", "message": "Hi"}, "recipient must be"),
        ({"recipient": "0812345678", "message": "Hi"}, "recipient must be"),
        ({"recipient": 712345678, "message": "Hi"}, "recipient must be"),
        ({"recipient": "0712345678", "message": ""}, "message must be a non-empty string"),
        ({"recipient": "0712345678", "message": "x" * 39_016}, "over 39015 characters"),
        ({"recipient": "0712345678", "message": "Hi", "sender": 5}, "sender must be a string"),
        ({"recipient": "0712345678", "message": "Hi", "validity": "60"}, "validity"),
        ({"recipient": "0712345678", "message": "Hi", "validity": True}, "validity"),
        ({"recipient": "0712345678", "message": "Hi", "validity": 1.5}, "validity"),
        ([], "body must be a JSON object"),
    ],
)  # fmt: skip
def test_single_refusals(sandbox, probe, body, problem):
    async def scenario(client: Client) -> None:
        response = await client.post(SINGLE, json=body, headers=AUTH)
        assert response.status == 400
        answer = await response.json()
        assert answer["success"] is False and problem in answer["message"]
        stats = await probe.stats(client)
        assert stats["items"] == 0 and stats["errors"] == 1
        assert stats["last_error"].startswith("gosms: ")

    sandbox(scenario)


@pytest.mark.parametrize(
    ("extra", "notice"),
    [
        ({"scheduleDatetime": "2030-01-02T03:04:05Z"}, "scheduleDatetime is neither"),
        ({"scheduleDatetime": "2030-02-30 03:04:05"}, "scheduleDatetime is neither"),
        ({"scheduleDatetime": "2030-01-02 3:04:05"}, "scheduleDatetime is neither"),
        ({"scheduleDatetime": 20300102}, "scheduleDatetime is neither"),
        ({"validity": -1}, "validity is negative"),
        ({"validity": 0}, None),
    ],
)
def test_values_the_document_says_are_ignored_are_accepted_with_a_notice(
    sandbox, probe, extra, notice
):
    """001: "If missing or invalid, the server's current time will be used";
    a validity defines something only "if provided and greater than 0"."""
    body = {"recipient": "0712345678", "message": "Hi", **extra}

    async def scenario(client: Client) -> None:
        response = await client.post(SINGLE, json=body, headers=AUTH)
        assert response.status == 200 and (await response.json())["success"] is True
        stats = await probe.stats(client)
        assert stats["items"] == 1 and stats["errors"] == 0
        if notice is None:
            assert (stats["notices"], stats["last_notice"]) == (0, None)
        else:
            assert stats["notices"] == 1 and stats["last_notice"].startswith(f"gosms: {notice}")

    sandbox(scenario)


def test_a_batch_notice_names_the_message(sandbox, probe):
    body = {"messages": [_message(0), {**_message(1), "scheduleDatetime": "soon"}]}

    async def scenario(client: Client) -> None:
        assert (await client.post(BATCH, json=body, headers=AUTH)).status == 200
        stats = await probe.stats(client)
        assert stats["items"] == 2 and stats["notices"] == 1
        assert stats["last_notice"].startswith("gosms: messages[1].scheduleDatetime is neither")

    sandbox(scenario)


def _message(i: int) -> dict[str, Any]:
    return {"recipient": f"07{i:08d}", "message": f"text {i}"}


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ('{"messages": [{"recipient": "0712345678", "recipient": "0712345679", "message": "Hi"}]}',
         "'recipient' given twice"),
        ('{"messages": [], "messages": []}', "'messages' given twice"),
        ('{"messages": []}', "messages must hold 1 to 1000 items, not 0"),
        ('{"messages": {}}', "messages must be a list"),
        ('{"message": []}', "body must hold exactly the field messages"),
        (json.dumps({"messages": [_message(1), {"recipient": "0712"}]}), "messages[1]: missing"),
        (json.dumps({"messages": [_message(i) for i in range(1001)]}), "not 1001"),
        ("{oops", "not valid JSON"),
    ],
)  # fmt: skip
def test_batch_refusals_refuse_the_whole_batch(sandbox, probe, raw, problem):
    async def scenario(client: Client) -> None:
        headers = {**AUTH, "Content-Type": "application/json"}
        response = await client.post(BATCH, data=raw, headers=headers)
        assert response.status == 400
        answer = await response.json()
        assert answer["success"] is False and problem in answer["message"]
        assert (await probe.stats(client))["items"] == 0

    sandbox(scenario)


def test_wrong_content_type_is_refused(sandbox):
    async def scenario(client: Client) -> None:
        data = {"recipient": "0712345678", "message": "Hi"}
        response = await client.post(SINGLE, data=data, headers=AUTH)  # form-encoded
        assert response.status == 400
        assert "Content-Type" in (await response.json())["message"]

    sandbox(scenario)


def test_batch_limit_is_the_max_batch_items_knob(sandbox, probe):
    async def scenario(client: Client) -> None:
        ok = {"messages": [_message(i) for i in range(5)]}
        assert (await client.post(BATCH, json=ok, headers=AUTH)).status == 200
        too_many = {"messages": [_message(i) for i in range(6)]}
        response = await client.post(BATCH, json=too_many, headers=AUTH)
        assert response.status == 400
        assert (await probe.stats(client))["max_items_per_request"] == 5

    sandbox(scenario, SandboxSettings(max_batch_items=5))


def test_a_full_batch_of_1000_is_recorded(sandbox, probe):
    async def scenario(client: Client) -> None:
        body = {"messages": [_message(i) for i in range(1000)]}
        answer = await (await client.post(BATCH, json=body, headers=AUTH)).json()
        assert [e["arrayPosition"] for e in answer["orderSummary"]] == list(range(1000))
        assert answer["balanceDeduction"] == "30.00"
        assert (await probe.stats(client))["by_kind"] == {"gosms": 1000}

    sandbox(scenario)
