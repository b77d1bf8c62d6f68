"""Settings, recorded state and the strict-parsing helpers the provider modules share.

The public names are re-exported by `worker.dev.sandbox.app`; import them from there.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from aiohttp import web

PLAIN_NUMBER = re.compile(r"[0-9]{8,15}")  # country code and digits, no prefix
_INTERN_MAX = 10_000  # distinct texts and senders shared between rows


@dataclass
class SandboxSettings:
    """Knobs, all of which can be changed at run time; each provider module
    declares the credentials it accepts (its ``CREDENTIALS``)."""

    latency_ms: float = 0.0
    fail_rate: float = 0.0
    throttle_rate: float = 0.0
    timeout_rate: float = 0.0
    malformed_rate: float = 0.0
    deep_rate: float = 0.0
    hang_s: float = 30.0
    seed: int | None = None
    # Recipients per request for the APIs whose documents state no limit
    # (GoSMS batch, uSpeedo, VoIP); SendBulk's 1000 is documented and fixed.
    max_batch_items: int = 1000
    # The next `throttle_next` provider requests are answered 429, before any
    # draw; every injected 429 says `Retry-After: <retry_after>` (any text:
    # "1e12", "inf" and HTTP dates are what hostile providers send).
    throttle_next: int = 0
    retry_after: str = "1"
    # Close a connection left idle this long after an answer (0: never), as
    # servers close kept-alive connections (Node and Apache 5 s, gunicorn 2 s).
    idle_close_s: float = 0.0
    # Provider kind -> an HTTP status (400-599) that answers every request of
    # that kind, unprocessed, before anything else: {"sendbulk": 503} is a
    # provider that is down, for failover.
    fail_status: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in KNOBS:
            check_knob(name, getattr(self, name))


KNOBS = tuple(f.name for f in fields(SandboxSettings))


def check_knob(name: str, value: object) -> None:
    """Raise ValueError unless `value` is acceptable for the knob `name`."""
    if name not in KNOBS:
        raise ValueError(f"unknown knob {name!r}")
    if name == "seed":
        ok = value is None or type(value) is int
    elif name == "max_batch_items":
        ok = type(value) is int and value >= 1
    elif name == "throttle_next":
        ok = type(value) is int and value >= 0
    elif name == "fail_status":
        ok = isinstance(value, dict) and all(
            isinstance(kind, str) and is_int(status) and 400 <= status <= 599
            for kind, status in value.items()
        )
    elif name == "retry_after":  # a header value: printable ASCII, one line
        ok = isinstance(value, str) and 0 < len(value) <= 64
        ok = ok and isinstance(value, str) and value.isascii() and value.isprintable()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        ok = False
    else:
        ok = math.isfinite(value) and value >= 0 and (value <= 1 or not name.endswith("_rate"))
    if not ok:
        raise ValueError(f"invalid value for {name}: {value!r}")


# One recorded recipient: kind, number, message sequence number, client id,
# text, sender, server time. Tuples keep a million of them affordable.
Row = tuple[str, str, int, int | None, str, str | None, float]
Recipient = tuple[str, int, int | None, str, str | None]  # number, seq, client_id, text, sender


class SandboxState:
    """Everything the sandbox records; one per app."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.route_kinds: dict[str, str] = {}
        self.stopping = asyncio.Event()  # set on shutdown, to end injected hangs
        # Pending closes of idle connections (`idle_close_s`), by transport.
        self.idle_closes: dict[asyncio.BaseTransport, asyncio.TimerHandle] = {}
        self._id_prefix = random.SystemRandom().getrandbits(64)
        self._seq = 0  # never reset, so ids stay unique for the app's life
        self.reset()

    def reset(self) -> None:
        self.rows: list[Row] = []
        self.requests = 0
        self.processed_requests = 0
        self.max_items_per_request = 0
        self.errors = 0
        self.last_error: str | None = None
        self.notices = 0
        self.last_notice: str | None = None
        self.deep_answers = 0
        self.idle_closed = 0
        self.by_kind: Counter[str] = Counter()
        self.items_per_s: Counter[tuple[str, int]] = Counter()
        self.requests_per_s: Counter[tuple[str, int]] = Counter()
        self._seen: dict[str, set[str]] = {}
        self._duplicates: set[tuple[str, str]] = set()
        self._interned: dict[str, str] = {}

    def new_message_id(self) -> tuple[int, str]:
        """A sequence number (kept per row) and the unique id it renders to."""
        self._seq += 1
        return self._seq, self.message_id(self._seq)

    def message_id(self, seq: int) -> str:
        h = f"{self._id_prefix:016x}{seq:016x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def refuse(self, kind: str, problem: str) -> None:
        self.errors += 1
        self.last_error = f"{kind}: {problem}"

    def notice(self, kind: str, problem: str) -> None:
        """A value the document says is accepted and ignored: a likely client bug."""
        self.notices += 1
        self.last_notice = f"{kind}: {problem}"

    def record(self, kind: str, request_size: int, recipients: Iterable[Recipient]) -> None:
        """Record an accepted request and the recipients it sent."""
        now = time.time()
        self.max_items_per_request = max(self.max_items_per_request, request_size)
        seen = self._seen.setdefault(kind, set())
        n = 0
        for number, seq, client_id, text, sender in recipients:
            if number in seen:
                self._duplicates.add((kind, number))
            else:
                seen.add(number)
            sender = None if sender is None else self._intern(sender)
            self.rows.append((kind, number, seq, client_id, self._intern(text), sender, now))
            n += 1
        self.by_kind[kind] += n
        self.items_per_s[(kind, int(now))] += n

    def _intern(self, text: str) -> str:
        known = self._interned.get(text)
        if known is not None:
            return known
        if len(self._interned) < _INTERN_MAX:
            self._interned[text] = text
        return text

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "processed_requests": self.processed_requests,
            "items": len(self.rows),
            "max_items_per_request": self.max_items_per_request,
            "duplicates": len(self._duplicates),
            "by_kind": dict(self.by_kind),
            "errors": self.errors,
            "last_error": self.last_error,
            "notices": self.notices,
            "last_notice": self.last_notice,
            "deep_answers": self.deep_answers,
            "idle_closed": self.idle_closed,
        }


STATE = web.AppKey("sandbox_state", SandboxState)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_provider_route(app: web.Application, kind: str, path: str, handler: Handler) -> None:
    """A POST route that fault injection and request counting apply to."""
    app[STATE].route_kinds[path] = kind
    app.router.add_post(path, handler)


class BodyError(ValueError):
    """The request body is not well-formed JSON of the right content type."""


class DuplicateKeyError(BodyError):
    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} given twice in one object")
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKeyError(key)
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise BodyError(f"{name} is not valid JSON")


async def read_json(request: web.Request) -> Any:
    """The body as JSON, refusing other content types, NaN and duplicate keys."""
    if request.content_type != "application/json":
        raise BodyError("Content-Type must be application/json")
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
        return json.loads(text, object_pairs_hook=_unique_pairs, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BodyError(f"body is not valid JSON: {exc}") from None


def key_problems(
    obj: dict[str, Any], required: Iterable[str], optional: Iterable[str] = ()
) -> tuple[list[str], list[str]]:
    """(missing, unknown) keys of `obj`."""
    req = list(required)
    allowed = set(req) | set(optional)
    return [k for k in req if k not in obj], [k for k in obj if k not in allowed]


def is_int(value: object) -> bool:
    return type(value) is int  # bool is not an int here


def count_parts(text: str) -> int:
    """160 characters in one SMS, else 153-character parts (GoSMS and VoIP docs)."""
    return 1 if len(text) <= 160 else math.ceil(len(text) / 153)
