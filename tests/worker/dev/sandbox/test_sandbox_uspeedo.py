"""uSpeedo sandbox: the document's example, failed targets, and every refusal."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from worker.dev.sandbox.app import SANDBOX_USPEEDO_ID, SANDBOX_USPEEDO_SECRET, SandboxSettings

Client = TestClient[web.Request, web.Application]
PATH = "/api/v1/usms/SendBatchUSMSMessage"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Accept": "application/json"}


AUTH = basic(SANDBOX_USPEEDO_ID, SANDBOX_USPEEDO_SECRET)
EXAMPLE = {
    "TaskContent": [
        {
            "TemplateId": "template_id_1",
            "SenderId": "uSpeedo",
            "Target": [{"Phone": "13800138000", "TemplateParams": ["123456"]}],
        }
    ]
}


def test_document_example_is_answered_in_the_documented_shape(sandbox, probe):
    async def scenario(client: Client) -> None:
        response = await client.post(PATH, json=EXAMPLE, headers=AUTH)
        assert response.status == 200
        answer = await response.json()
        assert list(answer) == ["RetCode", "Message", "SessionNo", "FailedTargetPhones"]
        assert answer["RetCode"] == 0 and answer["Message"] == "success"
        assert answer["FailedTargetPhones"] == []
        (session_no,) = answer["SessionNo"]
        (sent,) = await probe.sent(client, "uspeedo")
        assert sent["number"] == "13800138000" and sent["message_id"] == session_no
        assert sent["text"] == 'template_id_1 ["123456"]' and sent["sender"] == "uSpeedo"
        assert sent["client_id"] is None

    sandbox(scenario)


def test_one_session_number_per_task_and_invalid_phones_fail(sandbox, probe):
    body = {
        "TaskContent": [
            {
                "TemplateId": "t1",
                "SenderId": "Shop",
                "Target": [
                    {"Phone": "4915112345678", "TemplateParams": ["a"]},
                    {"Phone": "+4915112345679", "TemplateParams": ["b"]},
                ],
            },
            {"TemplateId": "t2", "SenderId": "Shop", "Target": [{"Phone": "1234"}]},
            {"TemplateId": "t3", "SenderId": "Shop", "Target": [{"Phone": "4915112345670"}]},
        ]
    }

    async def scenario(client: Client) -> None:
        answer = await (await client.post(PATH, json=body, headers=AUTH)).json()
        assert answer["RetCode"] == 0
        assert len(answer["SessionNo"]) == 3 and len(set(answer["SessionNo"])) == 3
        assert answer["FailedTargetPhones"] == [
            {"Phone": "+4915112345679", "TemplateParams": ["b"],
             "FailureReason": "Invalid phone number"},
            {"Phone": "1234", "TemplateParams": [], "FailureReason": "Invalid phone number"},
        ]  # fmt: skip
        sent = await probe.sent(client)
        assert [(r["number"], r["message_id"]) for r in sent] == [
            ("4915112345678", answer["SessionNo"][0]),
            ("4915112345670", answer["SessionNo"][2]),
        ]
        assert sent[1]["text"] == "t3 []"
        assert (await probe.stats(client))["max_items_per_request"] == 4

    sandbox(scenario)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Missing required parameter [Authorization]"),
        (basic(SANDBOX_USPEEDO_ID, "wrong"), "Invalid parameter [Authorization]"),
        ({"Authorization": "Bearer x"}, "Invalid parameter [Authorization]"),
        ({"Authorization": "Basic !!!"}, "Invalid parameter [Authorization]"),
    ],
)
def test_bad_credentials_get_a_retcode_error(sandbox, probe, headers, message):
    async def scenario(client: Client) -> None:
        response = await client.post(PATH, json=EXAMPLE, headers=headers)
        assert response.status == 200
        answer = await response.json()
        assert answer["Message"] == message and answer["RetCode"] in (215392, 215397)
        assert (await probe.stats(client))["items"] == 0

    sandbox(scenario)


def _with(**changes: Any) -> dict[str, Any]:
    task = dict(EXAMPLE["TaskContent"][0])
    target = dict(task["Target"][0])
    task["Target"] = [target]
    for key, value in changes.items():
        where = target if key in ("Phone", "TemplateParams", "Extra") else task
        if value is ...:
            del where[key]
        else:
            where[key] = value
    return {"TaskContent": [task]}


@pytest.mark.parametrize(
    ("body", "code", "parameter"),
    [
        ({}, 215397, "TaskContent"),
        ({"TaskContent": json.dumps(EXAMPLE["TaskContent"])}, 215392, "TaskContent"),
        ({"TaskContent": []}, 215392, "TaskContent"),
        ({**EXAMPLE, "Extra": 1}, 215392, "Extra"),
        (_with(TemplateId=...), 215397, "TemplateId"),
        (_with(SenderId=...), 215397, "SenderId"),
        (_with(Target=...), 215397, "Target"),
        (_with(Phone=...), 215397, "Phone"),
        (_with(TemplateId=""), 215392, "TemplateId"),
        (_with(TemplateId=1), 215392, "TemplateId"),
        (_with(SenderId=None), 215392, "SenderId"),
        (_with(Target={}), 215392, "Target"),
        (_with(Phone=13800138000), 215392, "Phone"),
        (_with(TemplateParams="123456"), 215392, "TemplateParams"),
        (_with(TemplateParams=[123456]), 215392, "TemplateParams"),
        (_with(Extra="x"), 215392, "Extra"),
        ({"TaskContent": EXAMPLE["TaskContent"] * 2}, 215392, "Phone"),  # one number twice
        ([], 215392, "Body"),
    ],
)
def test_body_refusals(sandbox, probe, body, code, parameter):
    async def scenario(client: Client) -> None:
        response = await client.post(PATH, json=body, headers=AUTH)
        assert response.status == 200
        what = "Invalid parameter" if code == 215392 else "Missing required parameter"
        assert await response.json() == {"RetCode": code, "Message": f"{what} [{parameter}]"}
        stats = await probe.stats(client)
        assert stats["items"] == 0 and stats["errors"] == 1
        assert stats["last_error"].startswith(f"uspeedo: {code} {what} [{parameter}]")

    sandbox(scenario)


@pytest.mark.parametrize(
    ("raw", "content_type", "parameter"),
    [
        ('{"TaskContent": [], "TaskContent": []}', "application/json", "TaskContent"),
        ("{nope", "application/json", "Body"),
        (json.dumps(EXAMPLE), "text/plain", "Body"),
    ],
)
def test_duplicate_keys_and_malformed_bodies_are_refused(
    sandbox, probe, raw, content_type, parameter
):
    async def scenario(client: Client) -> None:
        headers = {**AUTH, "Content-Type": content_type}
        answer = await (await client.post(PATH, data=raw, headers=headers)).json()
        assert answer == {"RetCode": 215392, "Message": f"Invalid parameter [{parameter}]"}

    sandbox(scenario)


def test_target_limit_is_the_max_batch_items_knob(sandbox, probe):
    def body(n: int) -> dict[str, Any]:
        targets = [{"Phone": f"4915{i:09d}"} for i in range(n)]
        return {"TaskContent": [{"TemplateId": "t", "SenderId": "S", "Target": targets}]}

    async def scenario(client: Client) -> None:
        assert (await (await client.post(PATH, json=body(3), headers=AUTH)).json())["RetCode"] == 0
        answer = await (await client.post(PATH, json=body(4), headers=AUTH)).json()
        assert answer == {"RetCode": 215392, "Message": "Invalid parameter [Target]"}
        assert (await probe.stats(client))["by_kind"] == {"uspeedo": 3}

    sandbox(scenario, SandboxSettings(max_batch_items=3))
