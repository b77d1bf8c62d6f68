"""The base provider adapter: fixed steps, filled in per provider.

build request -> post -> parse per-recipient outcomes -> classify errors.

The transport and HTTP-status part of the classification is the same for
every API and lives here (INTERFACE.md, "Failure semantics"): the HTTP status
decides before the body, a connection never made is safe to retry, a
request whose answer was lost may have been delivered. Everything a
provider's body means is decided in that provider's module.
"""

from __future__ import annotations

import base64
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, ClassVar

import aiohttp

from worker.config import Account, NumberFormat


class Verdict(StrEnum):
    ACCEPTED = "accepted"  # the provider took it
    FAILED = "failed"  # permanent: the provider refused it; never retried
    RETRY = "retry"  # not taken, safe to send again (never sent, 429, 5xx)
    UNCERTAIN = "uncertain"  # may have been taken: unknown or retried, per policy


@dataclass(slots=True)
class Recipient:
    """One message, parsed and ready for a provider request."""

    index: int
    e164: str
    address: str  # the number as this provider wants it written
    text: str | None
    params: list[str] | None
    sender: str | None
    segments: int | None  # our count of parts; None for template sends

    @property
    def cost_parts(self) -> int:
        return self.segments or 1


@dataclass(slots=True)
class JobContext:
    """What an adapter may know of the job (never its messages)."""

    job_id: str
    template_id: str | None
    schedule_at: str | None  # ISO 8601; providers' own scheduling is never used
    validity_minutes: int | None
    created_at: str | None = None  # ISO 8601; validity counts from here without schedule_at


@dataclass(slots=True)
class HttpRequest:
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    form: dict[str, str] | None = None
    auth: aiohttp.BasicAuth | None = None


@dataclass(slots=True)
class RecipientResult:
    verdict: Verdict
    provider_message_id: str | None = None
    cost: str | None = None
    currency: str | None = None
    error_code: str | None = None
    error: str | None = None


@dataclass(slots=True)
class SendResult:
    """One provider request's results, aligned with its recipients."""

    results: list[RecipientResult]
    http_status: int | None = None
    retry_after_s: float | None = None
    throttled: bool = False
    bad_credentials: bool = False


class MalformedResponse(Exception):
    pass


def all_of(
    batch: Sequence[Recipient], verdict: Verdict, code: str | None, error: str
) -> list[RecipientResult]:
    return [RecipientResult(verdict, error_code=code, error=error) for _ in batch]


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare for APIs; our own backoff applies


def decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedResponse("the answer is not JSON") from None


def basic_auth(user: str, password: str) -> str:
    """An ``Authorization`` header value: ``Basic base64(user:password)`` (UTF-8).

    Built here rather than with aiohttp.BasicAuth, deprecated in aiohttp 3.14.
    """
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def decode_json_exact(body: bytes) -> Any:
    """Like `decode_json`, with JSON numbers that have a fraction read as Decimal."""
    try:
        return json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise MalformedResponse("the answer is not JSON") from None


def decimal_text(value: object) -> str | None:
    """A provider's money figure as a decimal string, or None if it is not one.

    Floats go through ``str`` first (``Decimal(str(0.03))`` is ``0.03``, never
    ``0.0299999...``); with `decode_json_exact` they arrive as Decimal already.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = str(value)
    if not isinstance(value, int | str | Decimal):
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return str(number) if number.is_finite() else None


def distinct_batches(
    recipients: Sequence[Recipient],
    batch_size: int,
    max_parts: int,
    key: Callable[[Recipient], Hashable] = lambda recipient: None,
) -> list[list[Recipient]]:
    """Requests for APIs that match replies by number (INTERFACE.md, "A job").

    Every request holds recipients of one `key`, never one address twice, at
    most `batch_size` recipients and at most `max_parts` parts (a recipient
    costlier than that goes alone). First fit: a number given n times is
    spread over n requests; the order of recipients is kept within each.
    """
    batches: list[list[Recipient]] = []
    # Per key, the requests that still have room: (recipients, addresses, [parts]).
    open_by_key: dict[Hashable, list[tuple[list[Recipient], set[str], list[int]]]] = {}
    for recipient in recipients:
        cost = recipient.cost_parts
        candidates = open_by_key.setdefault(key(recipient), [])
        position = next(
            (
                i
                for i, (_, addresses, parts) in enumerate(candidates)
                if recipient.address not in addresses and parts[0] + cost <= max_parts
            ),
            None,
        )
        if position is None:
            batches.append([])
            candidates.append((batches[-1], set(), [0]))
            position = len(candidates) - 1
        batch, addresses, parts = candidates[position]
        batch.append(recipient)
        addresses.add(recipient.address)
        parts[0] += cost
        if len(batch) >= batch_size or parts[0] >= max_parts:
            del candidates[position]
    return batches


class Adapter(ABC):
    """Subclasses set the class attributes and implement the two steps."""

    kind: ClassVar[str]
    credential_keys: ClassVar[tuple[str, ...]]
    default_batch_size: ClassVar[int] = 100
    max_batch_size: ClassVar[int] = 1000
    default_max_parts: ClassVar[int] = 10
    max_text_chars: ClassVar[int | None] = None
    is_template: ClassVar[bool] = False
    default_number_format: ClassVar[NumberFormat] = "digits"

    def __init__(self, account: Account) -> None:
        self.account = account

    @property
    def number_format(self) -> NumberFormat:
        return self.account.number_format or self.default_number_format

    def url(self, path: str) -> str:
        return self.account.base_url + path

    @property
    def burst_parts(self) -> int:
        """The most parts one request may carry: ``messages_per_second × burst_s``."""
        return max(1, int(self.account.messages_per_second * self.account.burst_s))

    # -- step 0: grouping ---------------------------------------------------
    def group(self, recipients: Sequence[Recipient]) -> list[list[Recipient]]:
        """Split a chunk's recipients into requests.

        Default: at most ``batch_size`` recipients and at most a burst's worth
        of parts per request. Providers with other rules override this.
        """
        max_parts = max(1, int(self.account.messages_per_second * self.account.burst_s))
        batches: list[list[Recipient]] = []
        current: list[Recipient] = []
        parts = 0
        for recipient in recipients:
            cost = recipient.cost_parts
            if current and (len(current) >= self.account.batch_size or parts + cost > max_parts):
                batches.append(current)
                current, parts = [], 0
            current.append(recipient)
            parts += cost
        if current:
            batches.append(current)
        return batches

    # -- step 1: build ------------------------------------------------------
    @abstractmethod
    def build_request(self, batch: Sequence[Recipient], job: JobContext) -> HttpRequest: ...

    # -- step 3: parse ------------------------------------------------------
    @abstractmethod
    def parse_response(
        self, batch: Sequence[Recipient], status: int, body: bytes
    ) -> SendResult | Mapping[int, RecipientResult]:
        """Map an answer that is not 429/5xx to results.

        Return a mapping position-in-batch -> result (positions missing from
        it become UNCERTAIN: never assume a recipient was sent), or a whole
        SendResult. Raise MalformedResponse for a body that cannot be read.
        """

    def parse_client_error(
        self, batch: Sequence[Recipient], status: int, body: bytes
    ) -> SendResult:
        """4xx other than 429: permanent. Providers refine with their body."""
        bad_credentials = status in (401, 403)
        reason = "invalid credentials" if bad_credentials else f"refused with HTTP {status}"
        return SendResult(
            all_of(batch, Verdict.FAILED, str(status), reason),
            http_status=status,
            bad_credentials=bad_credentials,
        )

    # -- step 2 and 4: post and classify (fixed) ----------------------------
    async def send(
        self, session: aiohttp.ClientSession, batch: Sequence[Recipient], job: JobContext
    ) -> SendResult:
        request = self.build_request(batch, job)
        try:
            async with session.post(
                self.url(request.path),
                json=request.json,
                data=request.form,
                headers=request.headers,
                auth=request.auth,
            ) as response:
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                body = await response.read()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            # The connection was never made: nothing reached the provider.
            return SendResult(all_of(batch, Verdict.RETRY, "connect", type(error).__name__))
        except (TimeoutError, aiohttp.ClientError) as error:
            # Sent, or partly sent, and the answer was lost.
            name = type(error).__name__
            return SendResult(all_of(batch, Verdict.UNCERTAIN, "no-answer", f"answer lost: {name}"))
        return self.classify(batch, status, retry_after, body)

    def classify(
        self, batch: Sequence[Recipient], status: int, retry_after_s: float | None, body: bytes
    ) -> SendResult:
        if status == 429 or status >= 500:
            # The HTTP status decides, whatever the body says.
            return SendResult(
                all_of(batch, Verdict.RETRY, str(status), f"provider answered HTTP {status}"),
                http_status=status,
                retry_after_s=retry_after_s,
                throttled=status == 429,
            )
        try:
            if 400 <= status < 500:
                return self.parse_client_error(batch, status, body)
            parsed = self.parse_response(batch, status, body)
        except MalformedResponse as error:
            return SendResult(
                all_of(batch, Verdict.UNCERTAIN, str(status), str(error)), http_status=status
            )
        if isinstance(parsed, SendResult):
            parsed.http_status = status
            return parsed
        missing = RecipientResult(
            Verdict.UNCERTAIN, error_code=str(status), error="missing from the provider's answer"
        )
        return SendResult([parsed.get(i, missing) for i in range(len(batch))], http_status=status)
