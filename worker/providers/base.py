"""The base provider adapter: fixed steps, filled in per provider.

build request -> post -> parse per-recipient outcomes -> classify errors.

The transport and HTTP-status part of the classification is the same for
every API and lives here (docs/INTERFACE.md, "Failure semantics"): the HTTP
status decides before the body, a connection never made is safe to retry, a
request whose answer was lost may have been delivered. Everything a
provider's body means is decided in that provider's module.

A provider is not trusted to be sane: its answer is read up to
`MAX_ANSWER_BYTES`, a body that is larger, not UTF-8, nested deeper than the
parser goes or that its adapter cannot read is a malformed answer of that
request (the failure semantics table then decides), its ``Retry-After`` is
honoured up to the account's ``retry_max_s``, and every text it gives is
cut to `MAX_TEXT_CHARS` of valid Unicode before it reaches an outcome.
"""

from __future__ import annotations

import base64
import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, ClassVar

import aiohttp

from producer.accounts import KindInfo
from producer.errors import SmsbulkError
from worker.providers.account import Account, NumberFormat
from worker.providers.transport import MAX_ANSWER_BYTES, RequestBody, read_answer

MAX_TEXT_CHARS = 1000  # of a provider's id, cost, code or error kept in an outcome
# Sends of one request, at once, when each connection offered turns out closed
# by the provider before a byte was written (a server restart closes them all).
SEND_TRIES = 3
_SURROGATE = re.compile("[\ud800-\udfff]")


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


class MalformedResponse(SmsbulkError):
    pass


def all_of(
    batch: Sequence[Recipient], verdict: Verdict, code: str | None, error: str
) -> list[RecipientResult]:
    return [RecipientResult(verdict, error_code=code, error=error) for _ in batch]


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds from now: delay-seconds or an HTTP date.

    Whatever its size (``inf`` included): the adapter caps it at the
    account's ``retry_max_s``. None when absent or not a time (``nan``).
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - datetime.now(UTC)).total_seconds()
    return None if math.isnan(seconds) else max(0.0, seconds)


def _loads(body: bytes, **options: Any) -> Any:
    """JSON from a provider: UTF-8 only (RFC 8259), a BOM tolerated."""
    try:
        return json.loads(body.decode("utf-8-sig"), **options)
    except UnicodeDecodeError:
        raise MalformedResponse("the answer is not UTF-8") from None
    except RecursionError:
        raise MalformedResponse("the answer is nested too deeply") from None
    except ValueError:
        raise MalformedResponse("the answer is not JSON") from None


def decode_json(body: bytes) -> Any:
    return _loads(body)


def basic_auth(user: str, password: str) -> str:
    """An ``Authorization`` header value: ``Basic base64(user:password)`` (UTF-8).

    Built here rather than with aiohttp.BasicAuth, deprecated in aiohttp 3.14.
    """
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def decode_json_exact(body: bytes) -> Any:
    """Like `decode_json`, with JSON numbers that have a fraction read as Decimal."""
    return _loads(body, parse_float=Decimal)


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
    """Requests for APIs that match replies by number (docs/INTERFACE.md, "A job").

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


def storable(text: str | None) -> str | None:
    """A provider's text as an outcome can hold it: at most `MAX_TEXT_CHARS`,
    valid Unicode (a JSON escape may name a lone surrogate, which UTF-8, and so
    Redis, cannot hold: it becomes U+FFFD)."""
    if text is None:
        return None
    text = text[:MAX_TEXT_CHARS]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def _storable_result(result: RecipientResult) -> RecipientResult:
    result.provider_message_id = storable(result.provider_message_id)
    result.cost = storable(result.cost)
    result.currency = storable(result.currency)
    result.error_code = storable(result.error_code)
    result.error = storable(result.error)
    return result


class Adapter(ABC):
    """Subclasses set the class attributes and implement the two steps.

    The class attributes are every fact of a kind, written once: the
    configuration, the producers (through `kind_info`, published by the
    workers), docs/CONFIGURATION.md, the demo and the benchmark follow them
    (docs/ADDING-A-PROVIDER.md).
    """

    kind: ClassVar[str]  # the account's ``kind``
    credential_keys: ClassVar[tuple[str, ...]]  # the account keys read as ${VAR}s
    default_batch_size: ClassVar[int] = 100
    max_batch_size: ClassVar[int] = 1000
    default_max_parts: ClassVar[int] = 10
    max_text_chars: ClassVar[int | None] = None
    is_template: ClassVar[bool] = False  # sends a provider template with params, not a text
    needs_sender: ClassVar[bool] = False  # every request needs a sender (job or account)
    default_number_format: ClassVar[NumberFormat] = "digits"

    @classmethod
    def kind_info(cls) -> KindInfo:
        """What producers need of this kind; workers publish it with their accounts."""
        return KindInfo(template=cls.is_template, needs_sender=cls.needs_sender)

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
        for _ in range(SEND_TRIES):
            body = RequestBody(request.json, request.form)
            try:
                async with session.post(
                    self.url(request.path), data=body, headers=request.headers, auth=request.auth
                ) as response:
                    status = response.status
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    answer = await read_answer(response)
            except (TimeoutError, aiohttp.ClientError) as error:
                if body.closed_connection:
                    continue  # nothing was written: at once, on another connection
                name = type(error).__name__
                if not body.handed_over:
                    # Not a byte of the request was written: nothing reached the provider.
                    return SendResult(all_of(batch, Verdict.RETRY, "connect", name))
                # Sent, or partly sent, and the answer was lost.
                return SendResult(
                    all_of(batch, Verdict.UNCERTAIN, "no-answer", f"answer lost: {name}")
                )
            return self.classify(batch, status, retry_after, answer)
        reason = "the provider closed every connection before the request was written"
        return SendResult(all_of(batch, Verdict.RETRY, "connect", reason))

    def classify(
        self,
        batch: Sequence[Recipient],
        status: int,
        retry_after_s: float | None,
        body: bytes | None,
    ) -> SendResult:
        """The answer's meaning; ``body`` None: larger than `MAX_ANSWER_BYTES`."""
        result = self._classify(batch, status, retry_after_s, body)
        result.results = [_storable_result(r) for r in result.results]
        return result

    def _classify(
        self,
        batch: Sequence[Recipient],
        status: int,
        retry_after_s: float | None,
        body: bytes | None,
    ) -> SendResult:
        if status == 429 or status >= 500:
            # The HTTP status decides, whatever the body says.
            if retry_after_s is not None:
                retry_after_s = min(retry_after_s, self.account.retry_max_s)
            return SendResult(
                all_of(batch, Verdict.RETRY, str(status), f"provider answered HTTP {status}"),
                http_status=status,
                retry_after_s=retry_after_s,
                throttled=status == 429,
            )
        if 400 <= status < 500:
            try:
                return self.parse_client_error(batch, status, body or b"")
            except Exception:  # an unreadable refusal is still a refusal
                return Adapter.parse_client_error(self, batch, status, b"")
        try:
            if body is None:
                raise MalformedResponse(f"the answer is over {MAX_ANSWER_BYTES >> 20} MiB")
            parsed = self.parse_response(batch, status, body)
        except MalformedResponse as error:
            return self._malformed(batch, status, str(error))
        except RecursionError:
            return self._malformed(batch, status, "the answer is nested too deeply")
        except Exception as error:  # whatever the provider sent, the pass goes on
            return self._malformed(batch, status, f"unreadable answer ({type(error).__name__})")
        if isinstance(parsed, SendResult):
            parsed.http_status = status
            return parsed
        missing = RecipientResult(
            Verdict.UNCERTAIN, error_code=str(status), error="missing from the provider's answer"
        )
        return SendResult([parsed.get(i, missing) for i in range(len(batch))], http_status=status)

    @staticmethod
    def _malformed(batch: Sequence[Recipient], status: int, reason: str) -> SendResult:
        """An answer we cannot read: each recipient may or may not have been taken."""
        return SendResult(all_of(batch, Verdict.UNCERTAIN, str(status), reason), http_status=status)
