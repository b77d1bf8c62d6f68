"""VoIP Communications (document 004): `POST /api-v2/index.php/sms/send`, form-encoded.

Auth is HTTP Basic `api_key:api_password`. The document names only 200 and
401 ("Invalid api credentials"); the sandbox answers errors as JSON
`{"code": <HTTP status>, "code_desc": <problem>}`:

- 401: the Basic credentials are missing or wrong;
- 400: a Content-Type other than `application/x-www-form-urlencoded`, a body
  that does not parse, a field given twice or unknown (only `from`, `to`,
  `msg`, `delivery_date`), `to` or `msg` missing or empty, `to` not
  comma-separated digits, one number twice in `to` (replies are matched by
  number), more than `max_batch_items` numbers (no limit is documented), a
  `from` that is not 8-15 digits (it "must belong to you"), or a
  `delivery_date` that is no date: the document takes "YYYY-MM-DD HH:MM or
  any valid date format", which the sandbox reads as that format or ISO 8601
  (a date, or a date and time with or without a zone; no zone means UTC).

A number that is not 8-15 digits gets its own `send_log` entry with `code`
400, `status` "FAILED" and an empty `smsid`, and is not sent. Sent entries
cost 0.01 a part (160 characters, else 153 a part); `status` is "SCHEDULED"
for a `delivery_date` in the future (read as UTC), else "SENT".
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

import phonenumbers
from aiohttp import web

from worker.dev.sandbox.core import (
    PLAIN_NUMBER,
    STATE,
    Recipient,
    SandboxState,
    add_provider_route,
    count_parts,
)

KIND = "voipcomm"
# The account keys this sandbox accepts (the adapter's credential_keys), once:
# the demo and the benchmark configure their accounts with them.
CREDENTIALS = {"api_key": "sandbox-voip", "api_password": "sandbox-voip-pass"}
# Its answers give a `sale` without a currency: the account says which.
ACCOUNT_SETTINGS = {"currency": "USD"}
PATH = "/api-v2/index.php/sms/send"
FIELDS = ("from", "to", "msg", "delivery_date")
PRICE_PER_PART = 0.01
NUMBER_LIST = re.compile(r"[0-9]+(?:,[0-9]+)*")
DELIVERY_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}")
# The document's order of a send_log entry's fields.
_ENTRY_KEYS = ("code", "code_desc", "from", "to", "country", "msg", "delivery_date", "sale",
               "type", "status", "smsid")  # fmt: skip


class _Refusal(Exception):
    pass


@lru_cache(maxsize=1024)
def _country(prefix: str) -> str:
    """ISO region of a number's first three digits ("" if none)."""
    for length in (1, 2, 3):
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(prefix[:length]))
        if regions:
            return regions[0]
    return ""


def _credentials_ok(state: SandboxState, header: str | None) -> bool:
    scheme, _, token = (header or "").partition(" ")
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    expected = f"{CREDENTIALS['api_key']}:{CREDENTIALS['api_password']}"
    return scheme == "Basic" and decoded == expected


async def _form(request: web.Request) -> dict[str, str]:
    if request.content_type != "application/x-www-form-urlencoded":
        raise _Refusal("Content-Type must be application/x-www-form-urlencoded")
    try:
        body = (await request.read()).decode("utf-8")
        pairs = parse_qsl(body, keep_blank_values=True, strict_parsing=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Refusal(f"body is not form-encoded: {exc}") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise _Refusal(f"field {key} given twice")
        if key not in FIELDS:
            raise _Refusal(f"unknown field {key}")
        form[key] = value
    return form


def _validate(form: dict[str, str], max_numbers: int) -> list[str]:
    for key in ("to", "msg"):
        if not form.get(key):
            raise _Refusal(f"{key} is required")
    if not NUMBER_LIST.fullmatch(form["to"]):
        raise _Refusal("to must be numbers of digits separated by commas")
    numbers = form["to"].split(",")
    if len(numbers) > max_numbers:
        raise _Refusal(f"to holds {len(numbers)} numbers, over {max_numbers}")
    seen: set[str] = set()
    for number in numbers:
        if number in seen:
            raise _Refusal(f"number {number} given twice in to")
        seen.add(number)
    sender = form.get("from", "")
    if sender and not PLAIN_NUMBER.fullmatch(sender):
        raise _Refusal("from must be one of your numbers: 8-15 digits, or empty for bulk")
    when = form.get("delivery_date", "")
    if when:
        _delivery(when)
    return numbers


def _delivery(when: str) -> datetime:
    """A `delivery_date` as naive UTC; refused unless it is a date."""
    try:
        if DELIVERY_DATE.fullmatch(when):
            return datetime.strptime(when, "%Y-%m-%d %H:%M")
        moment = datetime.fromisoformat(when)  # "any valid date format", read as ISO 8601
    except ValueError:
        raise _Refusal("delivery_date must be YYYY-MM-DD HH:MM or an ISO 8601 date") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _refuse(state: SandboxState, status: int, problem: str) -> web.Response:
    state.refuse(KIND, f"{status} {problem}")
    return web.json_response({"code": status, "code_desc": problem}, status=status)


async def handle(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if not _credentials_ok(state, request.headers.get("Authorization")):
        return _refuse(state, 401, "Invalid api credentials")
    try:
        form = await _form(request)
        numbers = _validate(form, state.settings.max_batch_items)
    except _Refusal as exc:
        return _refuse(state, 400, str(exc))
    text, sender = form["msg"], form.get("from", "")
    now = datetime.now(UTC).replace(tzinfo=None)
    when = form.get("delivery_date", "")
    delivery = _delivery(when) if when else now
    common: dict[str, Any] = {
        "from": sender,
        "msg": text,
        "delivery_date": delivery.strftime("%Y-%m-%d %H:%M:%S"),
        "type": "2WAY" if sender else "BULKSMS",
    }
    sale = round(PRICE_PER_PART * count_parts(text), 2)
    log: list[dict[str, Any]] = []
    sent: list[Recipient] = []
    for number in numbers:
        entry = {"code": 200, "code_desc": "", **common, "to": number, "country": ""}
        if not PLAIN_NUMBER.fullmatch(number):
            entry.update(code=400, code_desc="Invalid destination number", sale=0,
                         status="FAILED", smsid="")  # fmt: skip
        else:
            seq, smsid = state.new_message_id()
            status = "SCHEDULED" if delivery > now else "SENT"
            entry.update(country=_country(number[:3]), sale=sale, status=status, smsid=smsid)
            sent.append((number, seq, None, text, sender or None))
        log.append({key: entry[key] for key in _ENTRY_KEYS})
    state.record(KIND, len(numbers), sent)
    return web.json_response({"send_log": log})


def setup(app: web.Application) -> None:
    add_provider_route(app, KIND, PATH, handle)
