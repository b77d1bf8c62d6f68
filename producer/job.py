"""The job contract: what other applications submit and what they get back.

The pydantic models here *are* the schema (``smsbulk schema`` prints the
job's JSON Schema); docs/INTERFACE.md describes the same fields in prose.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from producer.errors import SmsbulkError

JOB_ID_FORM = "[A-Za-z0-9._-]{1,64}"
JOB_ID_PATTERN = f"^{JOB_ID_FORM}$"
_JOB_ID = re.compile(JOB_ID_PATTERN)
MAX_VALIDITY_MINUTES = 43_200  # 30 days
MAX_DEDUPE_MINUTES = 43_200  # 30 days
MAX_SCHEDULE_AHEAD = timedelta(days=90)
MAX_REF_CHARS = 256
# max_cost: a decimal string; whole millionths of it must stay exact in a
# Lua number (a double: integers to 2**53), so at most 9 digits before the point.
MAX_COST_FORM = r"^[0-9]{1,9}(\.[0-9]{1,6})?$"
_MAX_COST = re.compile(MAX_COST_FORM)
MAX_COST_RULE = (
    'must be a decimal string such as "25.50": above 0, at most 999999999.999999, '
    "at most 6 decimal places"
)

DeliveryPolicy = Literal["at_most_once", "at_least_once"]
Priority = Literal["high", "normal"]
# A job's defaults, here once: a stored job read without them takes these
# (producer/core/settings.py).
DEFAULT_DELIVERY_POLICY: DeliveryPolicy = "at_most_once"
DEFAULT_PRIORITY: Priority = "normal"
OutcomeStatus = Literal[
    "pending", "accepted", "rejected", "failed", "expired", "cancelled", "unknown"
]
FINAL_STATUSES: tuple[OutcomeStatus, ...] = (
    "accepted",
    "rejected",
    "failed",
    "expired",
    "cancelled",
    "unknown",
)
JobState = Literal["scheduled", "queued", "running", "paused", "completed", "cancelled"]
# Why a paused job is paused, when not by a caller's pause.
PauseReason = Literal["max_cost"]

# Every string of a job is length-constrained: pydantic-core then reads it as
# Unicode and refuses a lone surrogate (a JavaScript client cutting an emoji
# in half) as ``string_unicode``, at no cost; a bare StrictStr would let it in.
NonEmptyStr = Annotated[StrictStr, Field(min_length=1)]
Text = Annotated[StrictStr, Field(min_length=0)]


def _max_cost_form(value: object) -> object:
    """The rule in words, before pydantic's pattern error could say it in a regex."""
    parse_max_cost(value)
    return value


MaxCost = Annotated[StrictStr, Field(pattern=MAX_COST_FORM), BeforeValidator(_max_cost_form)]


def is_job_id(value: str) -> bool:
    """Has ``value`` the form of a job id? Keys are built only from such ids."""
    return _JOB_ID.fullmatch(value) is not None


def parse_max_cost(value: object) -> Decimal:
    """A ``max_cost`` (job or resume) as a Decimal; ValueError naming the rule."""
    if not isinstance(value, str) or not _MAX_COST.fullmatch(value) or Decimal(value) <= 0:
        raise ValueError(MAX_COST_RULE)
    return Decimal(value)


class Message(BaseModel):
    """One recipient of a job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: NonEmptyStr = Field(description="Phone number as the client has it; parsed by workers.")
    text: Text | None = Field(default=None, description="Overrides the job's text.")
    params: list[Text] | None = Field(
        default=None, description="Template parameters (template providers)."
    )
    ref: Annotated[StrictStr, Field(max_length=MAX_REF_CHARS)] | None = Field(
        default=None, description="Client reference, echoed back."
    )


_HHMM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def _hhmm(value: str) -> str:
    if not _HHMM.fullmatch(value):
        raise ValueError("must be a time of day as HH:MM, 00:00 to 23:59")
    return value


HHMM = Annotated[
    StrictStr,
    Field(max_length=5, json_schema_extra={"pattern": f"^{_HHMM.pattern}$"}),
    AfterValidator(_hhmm),
]


def _known_zone(name: str) -> str:
    """``name`` if it is an IANA time zone this machine knows (tzdata ships them)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("not an IANA time zone name (e.g. Europe/Bucharest)") from None
    return name


TimeZone = Annotated[StrictStr, Field(min_length=1, max_length=64), AfterValidator(_known_zone)]


class SendWindow(BaseModel):
    """When recipients may be sent, in their own local time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: HHMM = Field(description="Local time the window opens, HH:MM (24 h).")
    end: HHMM = Field(description="Local time it closes, HH:MM; before start: overnight.")
    timezone: TimeZone | None = Field(
        default=None,
        description=(
            "An IANA time zone for every recipient; without it, each recipient's own zones"
            " (those of its number; several: the window must be open in all), and for a number"
            " of no known zone the workers' default_timezone."
        ),
    )

    @model_validator(mode="after")
    def _not_empty(self) -> SendWindow:
        if self.start == self.end:
            raise ValueError("start and end are equal: the window would never open")
        return self


class JobSpec(BaseModel):
    """Every setting of a job, without its messages: what a submission
    validates whole, before its messages stream in a block at a time."""

    model_config = ConfigDict(extra="forbid")

    job_id: Annotated[StrictStr, Field(pattern=JOB_ID_PATTERN)] | None = Field(
        default=None, description="Client-chosen unique id; generated when absent."
    )
    provider: NonEmptyStr = Field(description="Account name from the provider configuration.")
    text: Text | None = Field(default=None, description="Default text of every message.")
    sender: Text | None = Field(default=None, description="Sender id; else the account's.")
    template_id: Text | None = Field(default=None, description="For template providers.")
    schedule_at: AwareDatetime | None = Field(
        default=None,
        description="Send no earlier than this (ISO 8601 with zone), at most 90 days ahead.",
    )
    validity_minutes: Annotated[int, Field(ge=1, le=MAX_VALIDITY_MINUTES)] | None = Field(
        default=None,
        description="Messages not sent this long after schedule_at expire (at most 30 days).",
    )
    delivery_policy: DeliveryPolicy = DEFAULT_DELIVERY_POLICY
    priority: Priority = DEFAULT_PRIORITY
    callback_url: NonEmptyStr | None = Field(
        default=None,
        description="https URL POSTed the job status when it ends (never to a private address).",
    )
    transliterate: bool = Field(
        default=False,
        description=(
            "Replace the characters outside GSM-7 that have a GSM-7 form (typographic quotes,"
            " dashes, ellipsis, Unicode spaces, letters with diacritics GSM-7 lacks such as"
            " ă â î ș ț ç ł ő ş) before parts are counted and the text is sent; a text with any"
            " other character outside GSM-7 is sent as written (UCS-2)."
        ),
    )
    dedupe_minutes: Annotated[int, Field(ge=1, le=MAX_DEDUPE_MINUTES)] | None = Field(
        default=None,
        description=(
            "Duplicate suppression: a recipient (E.164) already sent the same text (template:"
            " the same template id and params) by any job with dedupe_minutes within this many"
            " minutes is rejected, naming the earlier send (at most 30 days)."
        ),
    )
    max_cost: MaxCost | None = Field(
        default=None,
        description=(
            "Spend cap, a decimal string in the accounts' currency: each provider request's"
            " cost (parts x the sending account's price_per_part) is reserved against it"
            " before the request goes, across every worker; a request that would pass it is"
            " not sent and the job is paused (pause_reason max_cost) until resumed with a"
            " higher cap. Every account the job may use needs a price_per_part."
        ),
        examples=["25.50"],
    )

    send_window: SendWindow | None = Field(
        default=None,
        description=(
            "Recipients are sent only while their local time is in [start, end); outside it"
            " they stay pending (expired if validity ends first). Else the account's window."
        ),
    )

    @field_validator("schedule_at")
    @classmethod
    def _not_too_far(cls, value: datetime | None) -> datetime | None:
        if value is not None and value - datetime.now(UTC) > MAX_SCHEDULE_AHEAD:
            raise ValueError("must be at most 90 days ahead")
        return value


class Job(JobSpec):
    """A bulk send: one provider account, many messages."""

    messages: list[Message] = Field(min_length=1)


class Outcome(BaseModel):
    """The fate of one message; one record per message, in the job's order."""

    job_id: str
    index: int
    to: str
    e164: str | None = None
    ref: str | None = None
    status: OutcomeStatus = "pending"
    provider: str
    provider_message_id: str | None = None
    segments: int | None = None
    cost: str | None = None
    currency: str | None = None
    error_code: str | None = None
    error: str | None = None
    attempts: int = 0
    updated_at: datetime | None = None


class JobStatus(BaseModel):
    job_id: str
    provider: str
    state: JobState
    total: int
    counts: dict[OutcomeStatus, int]
    # Final recipients per account that sent them (for a route job, the last
    # account tried), by final status; a one-account job's one entry.
    accounts: dict[str, dict[OutcomeStatus, int]]
    created_at: datetime
    finished_at: datetime | None = None
    max_cost: str | None = Field(
        default=None,
        description="The job's spend cap now (a resume may have raised it); null without one.",
    )
    spent: str | None = Field(
        default=None,
        description=(
            "A job with max_cost: the cost reserved by its provider requests that went"
            " (decimal string, in the accounts' currency; given back for requests that"
            " provably sent nothing); null without a cap."
        ),
    )
    pause_reason: PauseReason | None = Field(
        default=None,
        description=(
            "Why a paused job is paused: max_cost (its cap refused a request; resume with a"
            " higher max_cost); null otherwise (a paused job was then paused by a caller)."
        ),
    )


class JobRefused(SmsbulkError, ValueError):
    """A job refused whole at submission; nothing of it was queued."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['msg']}" for e in errors))


class JobExists(SmsbulkError):
    """A job with this id exists already."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job exists: {job_id}")
        self.job_id = job_id


Loc = tuple[int | str, ...]


def field_path(loc: Loc) -> str:
    """('messages', 3, 'to') -> 'messages[3].to'."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def error_records(
    error: ValidationError, relocate: Callable[[Loc], Loc] | None = None
) -> list[dict[str, Any]]:
    """pydantic's errors, named by field path, without the input values.

    ``relocate`` maps an error's location first: the errors of a block of
    messages, validated alone, name the messages' indices in the job.
    """
    return [
        {
            "field": field_path(relocate(e["loc"]) if relocate else e["loc"]),
            "msg": e["msg"],
            "type": e["type"],
        }
        for e in error.errors(include_url=False, include_input=False, include_context=False)
    ]


def refusal_from(error: ValidationError) -> JobRefused:
    return JobRefused(error_records(error))


def job_schema() -> dict[str, Any]:
    return Job.model_json_schema()
