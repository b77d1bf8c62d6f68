"""GoSMS (documents 001 single, 000 batch): `POST /v1/message/send` and `/send-batch`.

Auth is the `X-Authorization` header. The documents show only successes; the
sandbox answers, always with `{"success": false, "message": <problem>}`:

- HTTP 401 "Invalid API key": the header is missing or wrong;
- HTTP 400: wrong Content-Type, body not JSON, a key given twice, a missing or
  unknown key, a field of the wrong type, a recipient not in a documented form
  (`07XXXXXXXX`, `407XXXXXXXX`, `00` + 8-15 digits), an empty message or one
  over 39,015 characters, a `validity` that is not a whole number, or a
  batch of 0 or more than `max_batch_items`
  messages (no limit is documented; the knob defaults to 1000). One bad
  message refuses the whole batch; the problem names `messages[i]`.

As document 001 says, an invalid `scheduleDatetime` ("If missing or invalid,
the server's current time will be used") and a `validity` of 0 or less ("If
provided and greater than 0, this defines how long...") are accepted and
ignored: the message goes at once, without validity. Both count as `notices`
in the stats (a validity of exactly 0 excepted), since a client sending them
has a bug. Any `sender`
string is accepted ("if missing or invalid, the default short number will be
used"). Cost is 0.03 EUR per part (160 characters, else 153 a part).
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from worker.dev.sandbox.core import (
    STATE,
    BodyError,
    Recipient,
    SandboxState,
    add_provider_route,
    count_parts,
    key_problems,
    read_json,
)

KIND = "gosms"
# The account keys this sandbox accepts (the adapter's credential_keys), once:
# the demo and the benchmark configure their accounts with them.
CREDENTIALS = {"api_key": "sandbox-gosms-key"}
ACCOUNT_SETTINGS: dict[str, str] = {}
SINGLE_PATH = "/v1/message/send"
BATCH_PATH = "/v1/message/send-batch"
MAX_MESSAGE_CHARS = 39_015
PRICE_PER_PART = Decimal("0.03")
CURRENCY = "EUR"
RECIPIENT = re.compile(r"07[0-9]{8}|407[0-9]{8}|00[1-9][0-9]{7,14}")
OPTIONAL_KEYS = ("sender", "scheduleDatetime", "validity")
_SCHEDULE_FORMATS = (
    (re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z"),
     "%Y-%m-%dT%H:%M:%S.%fZ"),
    (re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}"), "%Y-%m-%d %H:%M:%S"),
)  # fmt: skip


class _Refusal(Exception):
    pass


def _valid_schedule(value: str) -> bool:
    for pattern, fmt in _SCHEDULE_FORMATS:
        if pattern.fullmatch(value):
            try:
                datetime.strptime(value, fmt)
            except ValueError:
                return False
            return True
    return False


def _check_message(where: str, msg: object, notices: list[str]) -> dict[str, Any]:
    """Refuse a single message object unless it is exactly as documented.

    Values the document says are ignored are appended to `notices`.
    """
    if not isinstance(msg, dict):
        raise _Refusal(f"{where} must be a JSON object")
    missing, unknown = key_problems(msg, ("recipient", "message"), OPTIONAL_KEYS)
    if missing:
        raise _Refusal(f"{where}: missing {', '.join(missing)}")
    if unknown:
        raise _Refusal(f"{where}: unknown field(s) {', '.join(unknown)}")
    prefix = f"{where}." if where != "body" else ""
    recipient, text = msg["recipient"], msg["message"]
    if not isinstance(recipient, str) or not RECIPIENT.fullmatch(recipient):
        raise _Refusal(f"{prefix}recipient must be 07XXXXXXXX, 407XXXXXXXX or 00 + 8-15 digits")
    if not isinstance(text, str) or not text:
        raise _Refusal(f"{prefix}message must be a non-empty string")
    if len(text) > MAX_MESSAGE_CHARS:
        raise _Refusal(f"{prefix}message is over {MAX_MESSAGE_CHARS} characters")
    if "sender" in msg and not isinstance(msg["sender"], str):
        raise _Refusal(f"{prefix}sender must be a string")
    schedule = msg.get("scheduleDatetime")
    if "scheduleDatetime" in msg and not (isinstance(schedule, str) and _valid_schedule(schedule)):
        notices.append(
            f"{prefix}scheduleDatetime is neither YYYY-MM-DDTHH:MM:SS.mmmZ nor "
            "YYYY-MM-DD HH:MM:SS: ignored, sent now"
        )
    if "validity" in msg:
        validity = msg["validity"]
        if isinstance(validity, bool) or not isinstance(validity, int):
            raise _Refusal(f"{prefix}validity must be a whole number of minutes")
        if validity < 0:
            notices.append(f"{prefix}validity is negative: ignored, no validity")
    return msg


def _failure(state: SandboxState, status: int, problem: str) -> web.Response:
    state.refuse(KIND, problem)
    return web.json_response({"success": False, "message": problem}, status=status)


def _cost(text: str) -> Decimal:
    return PRICE_PER_PART * count_parts(text)


def _money(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01")))


async def handle_single(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.headers.get("X-Authorization") != CREDENTIALS["api_key"]:
        return _failure(state, 401, "Invalid API key")
    notices: list[str] = []
    try:
        msg = _check_message("body", await read_json(request), notices)
    except (BodyError, _Refusal) as exc:
        return _failure(state, 400, str(exc))
    for notice in notices:
        state.notice(KIND, notice)
    seq, message_id = state.new_message_id()
    sent: Recipient = (msg["recipient"], seq, None, msg["message"], msg.get("sender"))
    state.record(KIND, 1, [sent])
    return web.json_response(
        {
            "success": True,
            "messageId": message_id,
            "balanceDeduction": _money(_cost(msg["message"])),
            "currency": CURRENCY,
        }
    )


def _check_batch(body: object, max_items: int, notices: list[str]) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        raise _Refusal("body must be a JSON object")
    missing, unknown = key_problems(body, ("messages",))
    if missing or unknown:
        raise _Refusal(f"body must hold exactly the field messages, not {', '.join(body) or '{}'}")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _Refusal("messages must be a list")
    if not 1 <= len(messages) <= max_items:
        raise _Refusal(f"messages must hold 1 to {max_items} items, not {len(messages)}")
    return [_check_message(f"messages[{i}]", msg, notices) for i, msg in enumerate(messages)]


async def handle_batch(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.headers.get("X-Authorization") != CREDENTIALS["api_key"]:
        return _failure(state, 401, "Invalid API key")
    notices: list[str] = []
    try:
        messages = _check_batch(await read_json(request), state.settings.max_batch_items, notices)
    except (BodyError, _Refusal) as exc:
        return _failure(state, 400, str(exc))
    for notice in notices:
        state.notice(KIND, notice)
    summary: list[dict[str, Any]] = []
    sent: list[Recipient] = []
    total = Decimal(0)
    for position, msg in enumerate(messages):
        seq, message_id = state.new_message_id()
        amount = _cost(msg["message"])
        total += amount
        summary.append(
            {
                "arrayPosition": position,
                "amount": float(amount),
                "recipient": msg["recipient"],
                "messageId": message_id,
            }
        )
        sent.append((msg["recipient"], seq, position, msg["message"], msg.get("sender")))
    state.record(KIND, len(messages), sent)
    return web.json_response(
        {
            "success": True,
            "message": "Message orders registered.",
            "balanceDeduction": _money(total),
            "currency": CURRENCY,
            "orderSummary": summary,
        }
    )


def setup(app: web.Application) -> None:
    add_provider_route(app, KIND, SINGLE_PATH, handle_single)
    add_provider_route(app, KIND, BATCH_PATH, handle_batch)
