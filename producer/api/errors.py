"""The API's answers when something is wrong: always JSON, always a clear
message, never an input value, a token or a body in a log."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from redis.exceptions import RedisError

from producer.client import NoSuchJob
from producer.control import InvalidResume, InvalidRetry, JobStateConflict
from producer.errors import ConfigError, SmsbulkError
from producer.job import JobExists, JobRefused

log = structlog.get_logger("smsbulk.api")

UNAUTHORIZED = (
    "missing or wrong bearer token: send the header Authorization: Bearer $SMSBULK_API_TOKEN"
)


class Invalid(SmsbulkError):
    """A query parameter or body field the API refuses (422)."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(f"{field}: {msg}")
        self.errors = [{"field": field, "msg": msg, "type": "value_error"}]


class StreamBroken(SmsbulkError):
    """A streamed answer failed after its headers were sent; the connection is dropped."""


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def invalid(errors: list[dict[str, Any]]) -> web.Response:
    # A whole-body error (not JSON, not an object) has an empty path: name it.
    return web.json_response(
        {"errors": [{**error, "field": error["field"] or "body"} for error in errors]}, status=422
    )


def _http_error(request: web.Request, error: web.HTTPException) -> web.Response:
    headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
    if isinstance(error, web.HTTPRequestEntityTooLarge):
        message = (
            f"request body too large: the limit is {request.client_max_size} bytes "
            "([settings] api_max_body_mb)"
        )
    elif isinstance(error, web.HTTPNotFound):
        message = "no such path"
    elif isinstance(error, web.HTTPMethodNotAllowed):
        message = f"method {request.method} not allowed here"
    else:
        message = error.reason
    return json_error(error.status, message, headers)


def error_response(request: web.Request, error: Exception) -> web.Response:
    """The JSON answer for an exception raised by a handler."""
    if isinstance(error, web.HTTPException):
        return _http_error(request, error)
    if isinstance(error, JobRefused | Invalid | InvalidResume):
        return invalid(error.errors)
    if isinstance(error, InvalidRetry):
        return invalid([{"field": "statuses", "msg": str(error), "type": "value_error"}])
    if isinstance(error, NoSuchJob):
        return json_error(404, f"no such job: {error.job_id}")
    if isinstance(error, JobExists):
        return json_error(409, f"job exists: {error.job_id}")
    if isinstance(error, JobStateConflict):
        return json_error(409, str(error))
    if isinstance(error, ConfigError):
        log.error("configuration error", error=str(error))
        return json_error(503, f"configuration error: {error}")
    if isinstance(error, RedisError):
        log.error("redis error", error=type(error).__name__)
        return json_error(503, "Redis is unavailable; try again later")
    log.exception("unexpected error", error=type(error).__name__)
    return json_error(500, "internal error")


def error_middleware(authorized: Callable[[str | None], bool]) -> Middleware:
    """Token check on every ``/v1`` path, JSON errors, one log line per request
    (route template and job id, never the query string or body)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        try:
            if (request.path.startswith("/v1/") or request.path == "/v1") and not authorized(
                request.headers.get("Authorization")
            ):
                response: web.StreamResponse = json_error(
                    401, UNAUTHORIZED, {"WWW-Authenticate": 'Bearer realm="smsbulk"'}
                )
            else:
                response = await handler(request)
        except StreamBroken:
            raise
        except Exception as error:
            response = error_response(request, error)
        resource = request.match_info.route.resource
        log.info(
            "request",
            method=request.method,
            route=resource.canonical if resource is not None else "unmatched",
            job_id=request.match_info.get("job_id"),
            status=response.status,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return response

    return middleware
