"""SendBulk (document 002): `POST /api/services/sendbulk`, JSON.

The document shows only success (200 per item) and 1006. The sandbox answers:

| HTTP | response-code | when |
| --- | --- | --- |
| 200 | 1006 Invalid credentials | the first item's partnerID, apikey or shortcode is wrong |
| 400 | 1001 | wrong Content-Type, body not JSON, or not an object |
| 400 | 1002 | `count` does not equal the length of `smslist` |
| 400 | 1003 | `smslist` holds fewer than 1 or more than 1000 items |
| 400 | 1004 | a key given twice in one JSON object |
| 400 | 1005 | a missing or unknown key |
| 400 | 1007 | a field of the wrong type or value |
| per item | 1009 Invalid mobile | `mobile` is not 8-15 digits; that item is not sent |

The document's own second sample item gives `pass_type` twice; a parser that
keeps the last value would hide that client bug, so 1004 refuses it. Per its
"Info" note, credentials that differ between items are not refused: those of
the first item are used, its shortcode included (recorded as the sender).
"""

from __future__ import annotations

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
    is_int,
    key_problems,
    read_json,
)

KIND = "sendbulk"
# The account keys this sandbox accepts (the adapter's credential_keys), once:
# the demo and the benchmark configure their accounts with them.
CREDENTIALS = {"partner_id": "sandbox-partner", "api_key": "sandbox-key", "shortcode": "SANDBOX"}
# Account settings a sandbox account of this kind wants beyond its credentials.
ACCOUNT_SETTINGS: dict[str, str] = {}
PATH = "/api/services/sendbulk"
MAX_ITEMS = 1000  # "up to 1000 unique messages in a single request"
ITEM_KEYS = ("partnerID", "apikey", "pass_type", "clientsmsid", "mobile", "message", "shortcode")
_STRING_KEYS = ("partnerID", "apikey", "pass_type", "mobile", "message", "shortcode")


class _Refusal(Exception):
    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


def _key_refusal(where: str, missing: list[str], unknown: list[str]) -> _Refusal:
    problems = []
    if missing:
        problems.append(f"missing key(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)}")
    return _Refusal(1005, f"{where}: {'; '.join(problems)}")


def _check_item(index: int, item: object) -> None:
    where = f"smslist[{index}]"
    if not isinstance(item, dict):
        raise _Refusal(1007, f"{where} must be an object")
    missing, unknown = key_problems(item, ITEM_KEYS)
    if missing or unknown:
        raise _key_refusal(where, missing, unknown)
    for key in _STRING_KEYS:
        if not isinstance(item[key], str):
            raise _Refusal(1007, f"{where}.{key} must be a string")
    if not is_int(item["clientsmsid"]):
        raise _Refusal(1007, f"{where}.clientsmsid must be an integer")
    if item["pass_type"] != "plain":
        raise _Refusal(1007, f'{where}.pass_type must be "plain"')
    if not item["message"]:
        raise _Refusal(1007, f"{where}.message must not be empty")


def _validate(body: object) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise _Refusal(1001, "body must be a JSON object")
    missing, unknown = key_problems(body, ("count", "smslist"))
    if missing or unknown:
        raise _key_refusal("body", missing, unknown)
    count, smslist = body["count"], body["smslist"]
    if not is_int(count):
        raise _Refusal(1007, "count must be an integer")
    if not isinstance(smslist, list):
        raise _Refusal(1007, "smslist must be a list")
    if count != len(smslist):
        raise _Refusal(1002, f"count ({count}) does not match smslist length ({len(smslist)})")
    if not 1 <= len(smslist) <= MAX_ITEMS:
        raise _Refusal(1003, f"smslist must hold 1 to {MAX_ITEMS} items, not {len(smslist)}")
    for index, item in enumerate(smslist):
        _check_item(index, item)
    return smslist


def _refuse(state: SandboxState, code: int, description: str, status: int = 400) -> web.Response:
    state.refuse(KIND, f"{code} {description}")
    body = {"response-code": code, "response-description": description}
    return web.json_response(body, status=status)


async def handle(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        smslist = _validate(await read_json(request))
    except DuplicateKeyError as exc:
        return _refuse(state, 1004, str(exc))
    except BodyError as exc:
        return _refuse(state, 1001, str(exc))
    except _Refusal as exc:
        return _refuse(state, exc.code, exc.description)
    first = smslist[0]
    given = (first["partnerID"], first["apikey"], first["shortcode"])
    if given != (CREDENTIALS["partner_id"], CREDENTIALS["api_key"], CREDENTIALS["shortcode"]):
        return _refuse(state, 1006, "Invalid credentials", status=200)
    sender: str = first["shortcode"]
    responses: list[dict[str, Any]] = []
    recipients: list[Recipient] = []
    for item in smslist:
        mobile, clientsmsid = item["mobile"], item["clientsmsid"]
        if not PLAIN_NUMBER.fullmatch(mobile):
            responses.append(
                {
                    "response-code": 1009,
                    "response-description": "Invalid mobile",
                    "mobile": mobile,
                    "clientsmsid": clientsmsid,
                }
            )
            continue
        seq, message_id = state.new_message_id()
        responses.append(
            {
                "response-code": 200,
                "response-description": "Success",
                "mobile": mobile,
                "messageid": message_id,
                "clientsmsid": clientsmsid,
                "networkid": 1,
            }
        )
        recipients.append((mobile, seq, clientsmsid, item["message"], sender))
    state.record(KIND, len(smslist), recipients)
    return web.json_response({"responses": responses})


def setup(app: web.Application) -> None:
    add_provider_route(app, KIND, PATH, handle)
