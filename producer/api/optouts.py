"""The bodies of the opt-out paths (``/v1/optouts``, ``/v1/inbound``) and
their reading into E.164 numbers; the handlers are in producer/api/app.py."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from producer import optouts
from producer.api.errors import Invalid
from producer.job import JobRefused, refusal_from

MAX_NUMBERS = 10_000  # numbers in one POST /v1/optouts
MAX_NUMBER_CHARS = 64
MAX_REPLY_CHARS = 10_000

REGION = Field(
    default=None,
    pattern=r"^[A-Z]{2}$",
    description="ISO 3166 region to read national numbers in, e.g. RO.",
    examples=["RO"],
)


class OptOutRequest(BaseModel):
    """The body of ``POST /v1/optouts``: numbers to add to the opt-out list."""

    model_config = ConfigDict(extra="forbid")

    numbers: list[str] = Field(
        min_length=1,
        max_length=MAX_NUMBERS,
        description=(
            f"1 to {MAX_NUMBERS:,} phone numbers: E.164 (+40712345678), 00 forms, or "
            "national forms read in `region`. One invalid number refuses the whole body."
        ),
    )
    region: str | None = REGION


class InboundReply(BaseModel):
    """The body of ``POST /v1/inbound``: a reply forwarded by the operator's receiver."""

    model_config = ConfigDict(extra="forbid")

    from_: str = Field(
        alias="from",
        min_length=1,
        max_length=MAX_NUMBER_CHARS,
        description="The replying number: E.164, or a national form read in `region`.",
    )
    text: str = Field(
        max_length=MAX_REPLY_CHARS,
        description=(
            "The reply. Its first word STOP, STOPALL, UNSUBSCRIBE, CANCEL, END or QUIT "
            "(any case) adds `from` to the opt-out list."
        ),
    )
    region: str | None = REGION


def _validated(model: type[BaseModel], body: bytes) -> Any:
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise refusal_from(error) from None


def _region(region: str | None) -> None:
    if region is not None and region not in optouts.SUPPORTED_REGIONS:
        raise Invalid("region", "not a known ISO 3166 region code")


def _reason(error: optouts.InvalidNumber) -> str:
    if isinstance(error, optouts.NeedsRegion):
        return "a national number needs `region` (or write it with + or 00)"
    return str(error)


def numbers_to_add(body: bytes) -> list[str]:
    """The body's numbers in E.164; JobRefused naming every invalid one
    (``numbers[3]``) without its value, or Invalid for the region."""
    wanted: OptOutRequest = _validated(OptOutRequest, body)
    _region(wanted.region)
    numbers, errors = [], []
    for index, raw in enumerate(wanted.numbers):
        try:
            if len(raw) > MAX_NUMBER_CHARS:
                raise optouts.InvalidNumber(f"longer than {MAX_NUMBER_CHARS} characters")
            numbers.append(optouts.to_e164(raw, wanted.region))
        except optouts.InvalidNumber as error:
            errors.append(
                {"field": f"numbers[{index}]", "msg": _reason(error), "type": "value_error"}
            )
    if errors:
        raise JobRefused(errors)
    return numbers


def reply(body: bytes) -> tuple[str, str | None]:
    """The reply's number in E.164 and its STOP keyword (None if it has none)."""
    inbound: InboundReply = _validated(InboundReply, body)
    _region(inbound.region)
    try:
        number = optouts.to_e164(inbound.from_, inbound.region)
    except optouts.InvalidNumber as error:
        raise Invalid("from", _reason(error)) from None
    return number, optouts.stop_keyword(inbound.text)


def listed_number(e164: str) -> str:
    """The path's number, which must be written in E.164; Invalid otherwise."""
    if not optouts.is_e164(e164):
        raise Invalid("e164", "must be a valid number in E.164 form, e.g. +40712345678")
    return e164
