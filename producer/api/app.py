"""The HTTP ingest API (``smsbulk api``): the enqueue client over HTTP.

Every ``/v1`` path needs ``Authorization: Bearer $SMSBULK_API_TOKEN``. The
Producer is synchronous (redis-py, Celery publish), so each of its calls runs
in a thread pool and the event loop never waits on Redis. Results are
streamed a few hundred records at a time, never a whole job in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

import redis
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from producer import optouts
from producer.accounts import read_config_file
from producer.api import optouts as optout_bodies
from producer.api.console import add_console
from producer.api.errors import Invalid, StreamBroken, error_middleware, json_error
from producer.api.openapi import openapi_document
from producer.client import NoSuchJob, Producer, redis_url_from_env
from producer.core.connection import sync_client
from producer.errors import ConfigError
from producer.job import JobStatus, MaxCost, Outcome, is_job_id, refusal_from
from producer.results import ENCODERS, MEDIA_TYPES, next_batch

BodyT = TypeVar("BodyT", bound=BaseModel)
TOKEN_ENV = "SMSBULK_API_TOKEN"
MIN_TOKEN_CHARS = 32
GENERATE_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
# .env.example's placeholders (this one and the one before): a copy of the
# example left as it was must not open the API to anyone who read it.
EXAMPLE_TOKENS = frozenset({"change-me", "change-me-to-the-output-of-secrets-token-urlsafe-32"})
DEFAULT_MAX_BODY_MB = 64
MIB = 1024 * 1024
DEFAULT_PORT = 8080
JOBS_LIMIT_MAX = 1000
RetryStatus = Literal["failed", "unknown", "expired", "cancelled"]

log = structlog.get_logger("smsbulk.api")
T = TypeVar("T")


class RetryRequest(BaseModel):
    """The body of ``POST /v1/jobs/{job_id}/retry``; an empty body means the defaults."""

    model_config = ConfigDict(extra="forbid")

    statuses: list[RetryStatus] = Field(
        default_factory=lambda: list[RetryStatus](["failed", "unknown"]),
        min_length=1,
        description="Recipients with these final statuses are sent again.",
    )


class ResumeRequest(BaseModel):
    """The body of ``POST /v1/jobs/{job_id}/resume``; an empty body resumes as it is."""

    model_config = ConfigDict(extra="forbid")

    max_cost: MaxCost | None = Field(
        default=None,
        description=(
            "A new spend cap for a job submitted with max_cost (a decimal string): set even if"
            " the job is not paused; refused below what the job has spent. Without it the"
            " cap stays."
        ),
        examples=["40.00"],
    )


@dataclass
class ApiState:
    producer: Producer
    health: redis.Redis
    executor: ThreadPoolExecutor
    token_digest: bytes | None  # None: --insecure-no-auth
    max_body_bytes: int
    openapi: dict[str, Any]

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking Producer call in the pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args))


STATE = web.AppKey("smsbulk_api", ApiState)


def check_token(token: str) -> None:
    """Refuse a bearer token anyone could guess: the example's, or one under
    32 characters. Raises ConfigError saying how to make a good one."""
    token = token.strip()
    if token in EXAMPLE_TOKENS:
        problem = "is the example's placeholder"
    elif len(token) < MIN_TOKEN_CHARS:
        problem = f"has {len(token)} characters, fewer than {MIN_TOKEN_CHARS}"
    else:
        return
    raise ConfigError(
        f"{TOKEN_ENV} {problem}: set it to a long random token, such as the output of "
        f"{GENERATE_TOKEN}, and give the same to the API's clients"
    )


def _digest(token: str) -> bytes:
    # Comparing fixed-length digests keeps the comparison constant-time even
    # in the token's length.
    return hashlib.sha256(token.encode()).digest()


def authorized(state: ApiState, header: str | None) -> bool:
    if state.token_digest is None:
        return True
    scheme, _, given = (header or "").partition(" ")
    same = hmac.compare_digest(_digest(given.strip()), state.token_digest)
    return same and scheme.lower() == "bearer"


def max_body_bytes_from_config(config_path: str | None = None) -> int:
    """``[settings] api_max_body_mb`` (MiB, default 64) of ``SMSBULK_CONFIG``, in bytes."""
    path = config_path or os.environ.get("SMSBULK_CONFIG")
    settings = read_config_file(path).get("settings", {}) if path else {}
    if not isinstance(settings, dict):
        raise ConfigError("settings: must be a table")
    value = settings.get("api_max_body_mb", DEFAULT_MAX_BODY_MB)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError("settings.api_max_body_mb: must be a number of megabytes above 0")
    return int(value * MIB)


def _state(request: web.Request) -> ApiState:
    return request.app[STATE]


def _job_id(request: web.Request) -> str:
    """The path's job id; an id of another form names no job (and no Redis key
    is ever built from it: `acc:m:0` would be job acc's first block)."""
    job_id = request.match_info["job_id"]
    if not is_job_id(job_id):
        raise NoSuchJob(job_id)
    return job_id


def _status_response(status: JobStatus, code: int = 200) -> web.Response:
    return web.json_response(status.model_dump(mode="json"), status=code)


async def _body(request: web.Request) -> bytes:
    """The request body; 413 (as JSON) past ``api_max_body_mb``."""
    limit = _state(request).max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(limit, request.content_length)
    return await request.read()


async def submit_job(request: web.Request) -> web.Response:
    state = _state(request)
    job_id = await state.call(state.producer.submit, await _body(request))
    log.info("job submitted", job_id=job_id)
    return web.json_response(
        {"job_id": job_id}, status=202, headers={"Location": f"/v1/jobs/{job_id}"}
    )


async def list_jobs(request: web.Request) -> web.Response:
    state = _state(request)
    raw = request.query.get("limit", "20")
    limit = int(raw) if raw.isdecimal() else 0
    if not 1 <= limit <= JOBS_LIMIT_MAX:
        raise Invalid("limit", f"must be an integer from 1 to {JOBS_LIMIT_MAX}")
    statuses = await state.call(state.producer.jobs, limit)
    return web.json_response({"jobs": [s.model_dump(mode="json") for s in statuses]})


async def job_status(request: web.Request) -> web.Response:
    state = _state(request)
    return _status_response(await state.call(state.producer.status, _job_id(request)))


async def job_results(request: web.Request) -> web.StreamResponse:
    state, job_id = _state(request), _job_id(request)
    fmt = request.query.get("format", "jsonl")
    if fmt not in ENCODERS:
        raise Invalid("format", "must be " + " or ".join(ENCODERS))
    outcomes: Iterator[Outcome] = await state.call(
        state.producer.results, job_id, request.query.get("ref")
    )
    response = web.StreamResponse(headers={"Content-Type": MEDIA_TYPES[fmt]})
    encoder = ENCODERS[fmt]()
    count = 0
    try:
        await response.prepare(request)
        if header := encoder.header():
            await response.write(header.encode())
        while batch := await state.call(next_batch, outcomes, encoder):
            count += batch.records
            await response.write(batch.data)
    except ConnectionError:  # the client went away; aiohttp closes quietly
        log.info("results client gone", job_id=job_id, sent=count)
        return response
    except Exception as error:  # headers are sent: the status can no longer say so
        log.warning("results stream broken", job_id=job_id, sent=count, error=type(error).__name__)
        raise StreamBroken from error
    finally:
        await state.call(_close, outcomes)
    log.info("results sent", job_id=job_id, records=count, format=fmt)
    return response  # aiohttp ends the chunked body (write_eof) once the middleware returns


def _close(outcomes: Iterator[Outcome]) -> None:
    close = getattr(outcomes, "close", None)
    if close is not None:
        close()


def _control(action: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        state, job_id = _state(request), _job_id(request)
        status = await state.call(getattr(state.producer, action), job_id)
        log.info("job control", action=action, job_id=job_id, state=status.state)
        return _status_response(status)

    handler.__name__ = f"{action}_job"
    return handler


async def _control_body(request: web.Request, model: type[BodyT]) -> BodyT:
    """A control call's optional JSON body (none: the model's defaults),
    refused naming the field (422) if malformed."""
    body = await _body(request)
    try:
        return model.model_validate_json(body if body.strip() else b"{}")
    except ValidationError as error:
        raise refusal_from(error) from None


async def resume_job(request: web.Request) -> web.Response:
    state, job_id = _state(request), _job_id(request)
    wanted = await _control_body(request, ResumeRequest)
    status = await state.call(state.producer.resume, job_id, wanted.max_cost)
    log.info("job control", action="resume", job_id=job_id, state=status.state)
    return _status_response(status)


async def retry_job(request: web.Request) -> web.Response:
    state, job_id = _state(request), _job_id(request)
    wanted = await _control_body(request, RetryRequest)
    status = await state.call(state.producer.retry, job_id, list(wanted.statuses))
    log.info("job retry", job_id=job_id, statuses=wanted.statuses)
    return _status_response(status)


async def job_timeline(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response(await state.call(state.producer.timeline, _job_id(request)))


async def job_errors(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response(await state.call(state.producer.errors, _job_id(request)))


async def list_accounts(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response({"accounts": await state.call(state.producer.account_health)})


async def list_optouts(request: web.Request) -> web.Response:
    state = _state(request)
    numbers = await state.call(optouts.listed, state.producer.redis)
    return web.json_response({"numbers": numbers, "count": len(numbers)})


async def add_optouts(request: web.Request) -> web.Response:
    state = _state(request)
    numbers = await state.call(optout_bodies.numbers_to_add, await _body(request))
    added = await state.call(optouts.add, state.producer.redis, numbers)
    log.info("opt-outs added", numbers=len(numbers), added=added)
    return web.json_response({"numbers": numbers, "added": added})


async def remove_optout(request: web.Request) -> web.Response:
    state = _state(request)
    number = optout_bodies.listed_number(request.match_info["e164"])
    removed = await state.call(optouts.remove, state.producer.redis, [number])
    log.info("opt-out removed", removed=removed)
    return web.json_response({"e164": number, "removed": bool(removed)})


async def inbound_reply(request: web.Request) -> web.Response:
    state = _state(request)
    number, keyword = optout_bodies.reply(await _body(request))
    if keyword is not None:
        await state.call(optouts.add, state.producer.redis, [number])
    log.info("inbound reply", keyword=keyword, opted_out=keyword is not None)
    return web.json_response({"from": number, "opted_out": keyword is not None, "keyword": keyword})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(_state(request).openapi)


async def healthz(request: web.Request) -> web.Response:
    state = _state(request)
    try:
        await state.call(state.health.ping)
    except RedisError as error:
        log.warning("health check failed", error=str(error))
        return json_error(503, "Redis is unavailable")
    return web.json_response({"status": "ok"})


async def _cleanup(app: web.Application) -> None:
    state = app[STATE]
    state.executor.shutdown(wait=True, cancel_futures=True)
    state.producer.close()
    state.health.close()


def create_app(
    token: str | None,
    redis_url: str | None = None,
    *,
    config_path: str | None = None,
    max_body_bytes: int | None = None,
    threads: int = 16,
) -> web.Application:
    """The API as an aiohttp application; ``token=None`` turns authentication off.

    Raises ConfigError for a token ``check_token`` refuses. ``max_body_bytes``
    defaults to ``[settings] api_max_body_mb`` of the config.
    """
    if token is not None:
        check_token(token)
    if max_body_bytes is None:
        max_body_bytes = max_body_bytes_from_config(config_path)
    url = redis_url or redis_url_from_env()
    producer = Producer(url, config_path=config_path)
    producer.celery  # noqa: B018 - created here, not racing in two pool threads
    state = ApiState(
        producer=producer,
        # No retries: a liveness probe must answer promptly when Redis is away.
        health=sync_client(
            url, socket_connect_timeout=2, socket_timeout=2, retry=Retry(NoBackoff(), 0)
        ),
        executor=ThreadPoolExecutor(threads, thread_name_prefix="smsbulk-api"),
        token_digest=None if token is None else _digest(token.strip()),
        max_body_bytes=max_body_bytes,
        openapi=openapi_document(RetryRequest, ResumeRequest),
    )
    app = web.Application(
        middlewares=[error_middleware(partial(authorized, state))], client_max_size=max_body_bytes
    )
    app[STATE] = state
    app.router.add_post("/v1/jobs", submit_job)
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_get("/v1/jobs/{job_id}", job_status)
    app.router.add_get("/v1/jobs/{job_id}/results", job_results)
    for action in ("cancel", "pause"):
        app.router.add_post(f"/v1/jobs/{{job_id}}/{action}", _control(action))
    app.router.add_post("/v1/jobs/{job_id}/resume", resume_job)
    app.router.add_post("/v1/jobs/{job_id}/retry", retry_job)
    app.router.add_get("/v1/jobs/{job_id}/timeline", job_timeline)
    app.router.add_get("/v1/jobs/{job_id}/errors", job_errors)
    app.router.add_get("/v1/accounts", list_accounts)
    app.router.add_get("/v1/optouts", list_optouts)
    app.router.add_post("/v1/optouts", add_optouts)
    app.router.add_delete("/v1/optouts/{e164}", remove_optout)
    app.router.add_post("/v1/inbound", inbound_reply)
    app.router.add_get("/v1/openapi.json", openapi)
    app.router.add_get("/healthz", healthz)
    add_console(app)
    app.on_cleanup.append(_cleanup)
    return app


def run_api(
    token: str | None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    redis_url: str | None = None,
    config_path: str | None = None,
) -> None:
    """Serve the API until interrupted (the ``smsbulk api`` command)."""
    app = create_app(token, redis_url, config_path=config_path)
    state = app[STATE]
    log.info(
        "api listening",
        url=f"http://{host}:{port}",
        auth="off" if token is None else "bearer",
        max_body_mb=round(state.max_body_bytes / MIB, 3),
    )
    if token is None:
        log.warning("authentication is off (--insecure-no-auth): anyone reaching the port may send")
    web.run_app(app, host=host, port=port, access_log=None, print=None, shutdown_timeout=5.0)
