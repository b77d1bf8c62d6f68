"""Structured logging that never leaks a credential or a full phone number.

Every event — ours through structlog, Celery's and aiohttp's through the stdlib
root logger — goes through the same processors: credential keys are redacted,
phone-like digit runs are masked, then one JSON object (or console line) is
written to stderr. Masking runs on the rendered traceback text too.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from typing import Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED = "[redacted]"
LOG_LEVEL_ENV = "SMSBULK_LOG_LEVEL"
LOG_FORMAT_ENV = "SMSBULK_LOG_FORMAT"
_FORMATS = ("json", "console", "auto")

# Compared after lower-casing and dropping "-" and "_": "API-Key", "api_key" and
# "gosms_api_key" (by suffix) are all caught.
_SECRET_NAMES = tuple(
    n.replace("_", "").replace("-", "")
    for n in (
        "api_key", "apikey", "api_password", "password", "secret", "token",
        "authorization", "access_key_secret", "access_key_id", "partnerid",
        "partner_id", "x-authorization",
    )
)  # fmt: skip
# Top-level keys that are identifiers operators grep for (smsbulk's own, never
# a number of anyone's): never masked.
_PASS_THROUGH = frozenset(
    {"job_id", "chunk", "request", "provider", "timestamp", "level", "logger"}
)

# A UUID (Celery task ids) or an ISO date/time is matched first and left alone;
# anything else with 7+ digits, optionally "+"-prefixed and split by single
# spaces or dashes, is a phone number, except digits right after "<digit>.": the
# fraction of a decimal (Celery's "succeeded in 0.0123456s"). "712345678.0" (a
# number read as a float from a spreadsheet) is masked.
_TEXT = re.compile(
    r"(?P<keep>(?<![0-9A-Za-z])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?![0-9A-Za-z])"
    r"|(?<![\d+])(?:19|20)\d\d-[01]\d-[0-3]\d(?:[T ][0-2]\d:[0-5]\d(?::[0-5]\d(?:[.,]\d+)?)?)?"
    r"(?![-\d]))"
    r"|(?P<phone>(?<!\d)(?<!\d\.)\+?\d(?:[ -]?\d){6,}(?!\d))"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")
_KEY_VALUE = re.compile(
    r"(?i)(api[_-]?key|api[_-]?password|password|passwd|secret|token|access[_-]?key[_-]?id"
    r"|partner[_-]?id|authorization)([\"']?\s*[=:]\s*[\"']?)(?!\[redacted\])[^\s&\"',;}]+"
)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s/]+@")


def _mask_match(match: re.Match[str]) -> str:
    if match.group("keep") is not None:
        return match.group("keep")
    compact = match.group("phone").replace(" ", "").replace("-", "")
    lead, tail = min(3, len(compact) // 4), min(2, len(compact) // 4)
    return compact[:lead] + "*" * (len(compact) - lead - tail) + compact[len(compact) - tail :]


def mask_text(text: str) -> str:
    """Mask every phone-like digit run and inline credential in free text."""
    text = _TEXT.sub(_mask_match, text)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    text = _KEY_VALUE.sub(rf"\1\2{REDACTED}", text)
    return _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)


def _is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    norm = key.lower().replace("_", "").replace("-", "")
    return norm.endswith(_SECRET_NAMES)


def _scrub_item(key: object, value: object) -> tuple[object, object]:
    shown = mask_text(key) if isinstance(key, str) else key
    return shown, REDACTED if _is_secret_key(key) else _scrub(value)


def _scrub(value: object) -> object:
    """Redact secret keys and mask phones, recursively; unknown objects become masked reprs."""
    if isinstance(value, str):
        return mask_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return dict(_scrub_item(k, v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    return mask_text(repr(value))


def scrub_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the last word before rendering on what may be written."""
    out: EventDict = {}
    for key, value in event_dict.items():
        if key.startswith("_"):  # _record / _from_structlog: ProcessorFormatter internals
            out[key] = value
        elif _is_secret_key(key):
            out[key] = REDACTED
        elif key in _PASS_THROUGH:
            out[key] = value
        else:
            out[key] = _scrub(value)
    return out


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]


def _resolve(level: str, fmt: str) -> tuple[int, str]:
    level = os.environ.get(LOG_LEVEL_ENV) or level
    fmt = (os.environ.get(LOG_FORMAT_ENV) or fmt).lower()
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}: set {LOG_LEVEL_ENV} to DEBUG..CRITICAL")
    if fmt not in _FORMATS:
        raise ValueError(f"unknown log format {fmt!r}: set {LOG_FORMAT_ENV} to json|console|auto")
    return number, fmt


def _stderr() -> TextIO:
    # Celery may have swapped sys.stderr for a proxy that logs: writing there would loop.
    if type(sys.stderr).__name__ == "LoggingProxy" and sys.__stderr__ is not None:
        return sys.__stderr__
    return sys.stderr


def configure_logging(
    level: str = "INFO", fmt: Literal["json", "console", "auto"] = "auto"
) -> None:
    """Configure structlog and the stdlib root logger; safe to call again in every process.

    Like ``logging.basicConfig(force=True)``: the root logger's other handlers are
    removed, since any handler not going through these processors could leak.
    """
    level_no, chosen = _resolve(level, fmt)
    stream = _stderr()
    if chosen == "auto":
        chosen = "console" if stream.isatty() else "json"
    renderer: Processor
    if chosen == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_shared_processors(),
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                scrub_event,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_no)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger first used before configure_logging() must not keep
        # the unmasked defaults for the life of the process.
        cache_logger_on_first_use=False,
    )


def get_logger(**initial_context: object) -> structlog.stdlib.BoundLogger:
    """A logger carrying *initial_context*; bind job_id/chunk per task via structlog.contextvars."""
    return structlog.stdlib.get_logger(**initial_context)


__all__ = ["REDACTED", "configure_logging", "get_logger", "mask_text", "scrub_event"]
