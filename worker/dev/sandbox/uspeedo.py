"""uSpeedo (document 003): `POST /api/v1/usms/SendBatchUSMSMessage`, JSON.

Auth is `Authorization: Basic base64(ACCESSKEY_ID:ACCESSKEY_SECRET)`. Every
answer is HTTP 200 (the document gives errors as RetCode bodies only) and uses
only the document's codes, `Message` naming the parameter as its example does:

- 215397 "Missing required parameter [X]": no Authorization header, or a
  required field (TaskContent, TemplateId, SenderId, Target, Phone) missing;
- 215392 "Invalid parameter [X]": wrong credentials ([Authorization]), wrong
  Content-Type or a body that is not JSON ([Body]), an unknown or repeated key
  ([that key]), a field of the wrong type or empty ([that field]; TaskContent
  sent as a JSON string too, the document's "Real API expects the full JSON
  structure"), more than `max_batch_items` targets in all ([Target]; no limit
  is documented), or one Phone twice in one request ([Phone]: replies are
  matched by number).

A Phone that is not 8-15 digits goes into `FailedTargetPhones` with
`FailureReason` "Invalid phone number" and is not sent. `SessionNo` holds one
id per TaskContent element, in order; it is every recipient's message id. The
recorded text is `"<TemplateId> <TemplateParams as JSON>"`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from worker.dev.sandbox.core import (
    PLAIN_NUMBER,
    STATE,
    BodyError,
    DuplicateKeyError,
    Recipient,
    SandboxState,
    add_provider_route,
    key_problems,
    read_json,
)

KIND = "uspeedo"
# The account keys this sandbox accepts (the adapter's credential_keys), once:
# the demo and the benchmark configure their accounts with them.
CREDENTIALS = {"access_key_id": "sandbox-id", "access_key_secret": "sandbox-secret"}
# The adapter needs a sender (here or in the job).
ACCOUNT_SETTINGS = {"sender": "uSpeedo"}
PATH = "/api/v1/usms/SendBatchUSMSMessage"
INVALID = 215392
MISSING = 215397


class _Refusal(Exception):
    def __init__(self, code: int, parameter: str, detail: str = "") -> None:
        what = "Invalid parameter" if code == INVALID else "Missing required parameter"
        self.code = code
        self.message = f"{what} [{parameter}]"
        super().__init__(f"{self.message}{': ' + detail if detail else ''}")


def _exact(
    obj: object, parent: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _Refusal(INVALID, parent, "not a JSON object")
    missing, unknown = key_problems(obj, required, optional)
    if missing:
        raise _Refusal(MISSING, missing[0])
    if unknown:
        raise _Refusal(INVALID, unknown[0], "unknown field")
    return obj


def _non_empty_list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj[key]
    if not isinstance(value, list) or not value:
        raise _Refusal(INVALID, key, "must be a non-empty list")
    return value


def _check_target(target: object, seen: set[str]) -> None:
    target = _exact(target, "Target", ("Phone",), ("TemplateParams",))
    phone = target["Phone"]
    if not isinstance(phone, str) or not phone:
        raise _Refusal(INVALID, "Phone", "must be a non-empty string")
    if phone in seen:
        raise _Refusal(INVALID, "Phone", f"{phone} given twice in one request")
    seen.add(phone)
    params = target.get("TemplateParams", [])
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise _Refusal(INVALID, "TemplateParams", "must be a list of strings")


def _validate(body: object, max_targets: int) -> list[dict[str, Any]]:
    tasks = _non_empty_list(_exact(body, "Body", ("TaskContent",)), "TaskContent")
    seen: set[str] = set()
    for task in tasks:
        task = _exact(task, "TaskContent", ("TemplateId", "SenderId", "Target"))
        for key in ("TemplateId", "SenderId"):
            if not isinstance(task[key], str) or not task[key]:
                raise _Refusal(INVALID, key, "must be a non-empty string")
        for target in _non_empty_list(task, "Target"):
            _check_target(target, seen)
    if len(seen) > max_targets:
        raise _Refusal(INVALID, "Target", f"{len(seen)} targets, over {max_targets}")
    return tasks


def _credentials_ok(state: SandboxState, header: str) -> bool:
    scheme, _, token = header.partition(" ")
    if scheme != "Basic":
        return False
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return decoded == f"{CREDENTIALS['access_key_id']}:{CREDENTIALS['access_key_secret']}"


def _refuse(state: SandboxState, refusal: _Refusal) -> web.Response:
    state.refuse(KIND, f"{refusal.code} {refusal}")
    return web.json_response({"RetCode": refusal.code, "Message": refusal.message})


async def handle(request: web.Request) -> web.Response:
    state = request.app[STATE]
    header = request.headers.get("Authorization")
    if header is None:
        return _refuse(state, _Refusal(MISSING, "Authorization"))
    if not _credentials_ok(state, header):
        return _refuse(state, _Refusal(INVALID, "Authorization", "wrong credentials"))
    try:
        tasks = _validate(await read_json(request), state.settings.max_batch_items)
    except DuplicateKeyError as exc:
        return _refuse(state, _Refusal(INVALID, exc.key, "given twice"))
    except BodyError as exc:
        return _refuse(state, _Refusal(INVALID, "Body", str(exc)))
    except _Refusal as refusal:
        return _refuse(state, refusal)
    session_numbers: list[str] = []
    failed: list[dict[str, Any]] = []
    sent: list[Recipient] = []
    size = 0
    for task in tasks:
        seq, session_no = state.new_message_id()
        session_numbers.append(session_no)
        for target in task["Target"]:
            size += 1
            phone, params = target["Phone"], target.get("TemplateParams", [])
            if not PLAIN_NUMBER.fullmatch(phone):
                reason = "Invalid phone number"
                failed.append({"Phone": phone, "TemplateParams": params, "FailureReason": reason})
                continue
            text = f"{task['TemplateId']} {json.dumps(params, ensure_ascii=False)}"
            sent.append((phone, seq, None, text, task["SenderId"]))
    state.record(KIND, size, sent)
    return web.json_response(
        {
            "RetCode": 0,
            "Message": "success",
            "SessionNo": session_numbers,
            "FailedTargetPhones": failed,
        }
    )


def setup(app: web.Application) -> None:
    add_provider_route(app, KIND, PATH, handle)
