"""The sandbox app: factory, fault injection and inspection endpoints.

Every provider route (one module per API) passes through `_faults`: one
seeded draw per request decides, in this order, HTTP 500 (`fail_rate`, not
processed), HTTP 429 with `Retry-After: 1` (`throttle_rate`, not processed),
a hang of `hang_s` after processing (`timeout_rate`), a 200 non-JSON body
after processing (`malformed_rate`) or a 200 JSON body nested
`DEEP_BODY_DEPTH` deep after processing (`deep_rate`, counted as
`deep_answers` in the stats: Python's json raises RecursionError on it).
`latency_ms` delays every answer. Before the draw, `throttle_next` > 0
answers 429 and counts itself down; every injected 429 carries
`Retry-After: <retry_after>`. `fail_status` ({"KIND": STATUS}) answers
every request of that kind with that status, unprocessed and before
anything else (no draw, no `throttle_next`). With `idle_close_s` > 0 a connection that
carries no new provider request for that long after an answer is closed
(counted as `idle_closed`), as servers close kept-alive connections.

Inspection, no auth: `GET /_sandbox/stats`, `GET /_sandbox/sent?kind=K` (JSON
Lines), `GET /_sandbox/rate?kind=K`, `GET|POST /_sandbox/settings`,
`POST /_sandbox/reset`. In the stats, `requests` counts every provider
request, `processed_requests` those not dropped by a 500/429 fault, `errors`
those refused by strictness or credentials, `notices` the values a document
says are silently ignored (GoSMS: an invalid `scheduleDatetime`, a negative
`validity`), accepted as documented but counted as likely client bugs,
`duplicates` the (kind, number) pairs recorded more than once,
`max_items_per_request` the most recipients in one accepted request. The
rate's `requests_per_second` counts every provider request, faulted ones
included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, Protocol

from aiohttp import web

from worker.dev.sandbox import gosms, sendbulk, uspeedo, voipcomm
from worker.dev.sandbox.core import (
    KNOBS,
    STATE,
    Handler,
    SandboxSettings,
    SandboxState,
    check_knob,
    read_json,
)

__all__ = [
    "SANDBOX_API_KEY",
    "SANDBOX_GOSMS_KEY",
    "SANDBOX_PARTNER_ID",
    "SANDBOX_SHORTCODE",
    "SANDBOX_USPEEDO_ID",
    "SANDBOX_USPEEDO_SECRET",
    "SANDBOX_VOIP_KEY",
    "SANDBOX_VOIP_PASSWORD",
    "SANDBOXES",
    "STATE",
    "SandboxSettings",
    "SandboxState",
    "account_toml",
    "make_app",
    "parse_fail_status",
    "run_sandbox",
]


class SandboxModule(Protocol):
    """What a provider's sandbox module declares (``worker/dev/sandbox/KIND.py``)."""

    KIND: str
    CREDENTIALS: dict[str, str]  # keyed by the adapter's credential_keys
    ACCOUNT_SETTINGS: dict[str, str]  # what else an account on it wants

    def setup(self, app: web.Application) -> None: ...


# Provider kind -> its sandbox module: the one list of the APIs served here.
SANDBOXES: dict[str, SandboxModule] = {
    module.KIND: module for module in (sendbulk, gosms, uspeedo, voipcomm)
}
KINDS = tuple(SANDBOXES)

# The modules' credentials under the names the tests and tools import.
SANDBOX_PARTNER_ID = sendbulk.CREDENTIALS["partner_id"]
SANDBOX_API_KEY = sendbulk.CREDENTIALS["api_key"]
SANDBOX_SHORTCODE = sendbulk.CREDENTIALS["shortcode"]
SANDBOX_GOSMS_KEY = gosms.CREDENTIALS["api_key"]
SANDBOX_USPEEDO_ID = uspeedo.CREDENTIALS["access_key_id"]
SANDBOX_USPEEDO_SECRET = uspeedo.CREDENTIALS["access_key_secret"]
SANDBOX_VOIP_KEY = voipcomm.CREDENTIALS["api_key"]
SANDBOX_VOIP_PASSWORD = voipcomm.CREDENTIALS["api_password"]


def account_toml(
    kind: str, var_prefix: str, settings: Mapping[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The TOML lines of a `kind` account on this sandbox beyond kind, base_url
    and limits: its credentials as ``${VAR}``s (``VAR_PREFIX_KEY``, as in
    production), then `settings` (default: the module's ACCOUNT_SETTINGS).
    Returns the lines and the environment the ``${VAR}``s need."""
    module = SANDBOXES[kind]
    lines, env = [], {}
    for key, value in module.CREDENTIALS.items():
        var = f"{var_prefix}_{key}".upper().replace("-", "_")
        env[var] = value
        lines.append(f'{key} = "${{{var}}}"')
    extra = module.ACCOUNT_SETTINGS if settings is None else settings
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    return lines, env


MAX_BODY_BYTES = 64 * 1024 * 1024  # a GoSMS batch of 1000 texts of 39,015 characters
_SENT_CHUNK_LINES = 5000
_MALFORMED_BODY = "<html><body><h1>502 Bad Gateway</h1></body></html>"
DEEP_BODY_DEPTH = 200_000
_DEEP_BODY = "[" * DEEP_BODY_DEPTH + "]" * DEEP_BODY_DEPTH


@web.middleware
async def _faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    kind = state.route_kinds.get(request.path) if request.method == "POST" else None
    if kind is None:
        return await handler(request)
    knobs = state.settings
    _keep_open(state, request)
    state.requests += 1
    state.requests_per_s[(kind, int(time.time()))] += 1
    status = knobs.fail_status.get(kind)
    if status is not None:
        injected = web.Response(
            status=status,
            text=f"sandbox: injected status {status}",
            headers={"Retry-After": knobs.retry_after} if status == 429 else None,
        )
        if knobs.latency_ms > 0:
            await asyncio.sleep(knobs.latency_ms / 1000)
        _close_when_idle(state, request)
        return injected
    forced_429 = knobs.throttle_next > 0
    if forced_429:
        knobs.throttle_next -= 1
    roll = 1.0 if forced_429 else state.rng.random()
    response: web.StreamResponse
    if roll < knobs.fail_rate:
        response = web.Response(status=500, text="sandbox: injected server error")
    elif forced_429 or roll < knobs.fail_rate + knobs.throttle_rate:
        response = web.Response(
            status=429,
            text="sandbox: injected throttling",
            headers={"Retry-After": knobs.retry_after},
        )
    else:
        state.processed_requests += 1
        response = await handler(request)
        roll -= knobs.fail_rate + knobs.throttle_rate
        if roll < knobs.timeout_rate:
            with contextlib.suppress(TimeoutError):  # ends early when the app shuts down
                await asyncio.wait_for(state.stopping.wait(), knobs.hang_s)
        elif roll < knobs.timeout_rate + knobs.malformed_rate:
            response = web.Response(status=200, text=_MALFORMED_BODY, content_type="text/html")
        elif roll < knobs.timeout_rate + knobs.malformed_rate + knobs.deep_rate:
            state.deep_answers += 1
            response = web.Response(status=200, text=_DEEP_BODY, content_type="application/json")
    if knobs.latency_ms > 0:
        await asyncio.sleep(knobs.latency_ms / 1000)
    _close_when_idle(state, request)
    return response


def _keep_open(state: SandboxState, request: web.Request) -> None:
    """A request on a connection: it is no longer idle."""
    pending = state.idle_closes.pop(request.transport, None) if request.transport else None
    if pending is not None:
        pending.cancel()


def _close_when_idle(state: SandboxState, request: web.Request) -> None:
    transport = request.transport
    delay_s = state.settings.idle_close_s
    if transport is None or delay_s <= 0:
        return

    def close() -> None:
        if state.idle_closes.pop(transport, None) is not None and not transport.is_closing():
            state.idle_closed += 1
            transport.close()

    state.idle_closes[transport] = asyncio.get_running_loop().call_later(delay_s, close)


# --- inspection -----------------------------------------------------------------


def _kind_param(request: web.Request) -> str | None:
    kind = request.query.get("kind")
    if kind is not None and kind not in KINDS:
        raise web.HTTPBadRequest(text=f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    return kind


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats())


async def _sent(request: web.Request) -> web.StreamResponse:
    """One JSON line per recorded recipient, streamed in chunks."""
    kind = _kind_param(request)
    state = request.app[STATE]
    rows = state.rows  # a reset swaps in a new list; this answer keeps the old one
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    lines: list[str] = []
    for i in range(len(rows)):
        row_kind, number, seq, client_id, text, sender, t = rows[i]
        if kind is not None and row_kind != kind:
            continue
        record = {
            "kind": row_kind,
            "number": number,
            "message_id": state.message_id(seq),
            "client_id": client_id,
            "text": text,
            "sender": sender,
            "t": t,
        }
        lines.append(json.dumps(record, ensure_ascii=False))
        if len(lines) >= _SENT_CHUNK_LINES:
            await response.write(("\n".join(lines) + "\n").encode())
            lines.clear()
    if lines:
        await response.write(("\n".join(lines) + "\n").encode())
    await response.write_eof()
    return response


def _per_second(counts: Counter[tuple[str, int]], kind: str | None) -> dict[str, int]:
    merged: Counter[int] = Counter()
    for (row_kind, second), n in counts.items():
        if kind is None or row_kind == kind:
            merged[second] += n
    return {str(second): merged[second] for second in sorted(merged)}


async def _rate(request: web.Request) -> web.Response:
    kind = _kind_param(request)
    state = request.app[STATE]
    return web.json_response(
        {
            "items_per_second": _per_second(state.items_per_s, kind),
            "requests_per_second": _per_second(state.requests_per_s, kind),
        }
    )


def _knobs(settings: SandboxSettings) -> dict[str, Any]:
    return {k: v for k, v in asdict(settings).items() if k in KNOBS}


async def _get_settings(request: web.Request) -> web.Response:
    return web.json_response(_knobs(request.app[STATE].settings))


async def _post_settings(request: web.Request) -> web.Response:
    """Change knobs at run time: all of the body's or, if one is invalid, none."""
    state = request.app[STATE]
    try:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object of knobs")
        for name, value in body.items():
            check_knob(name, value)
        check_kinds(body.get("fail_status", {}))
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    for name, value in body.items():
        setattr(state.settings, name, value)
    if "seed" in body:
        state.rng = random.Random(body["seed"])
    return web.json_response(_knobs(state.settings))


def check_kinds(fail_status: Mapping[str, int]) -> None:
    """Raise ValueError for a `fail_status` naming a kind the sandbox does not serve."""
    unknown = sorted(set(fail_status) - set(KINDS))
    if unknown:
        raise ValueError(f"fail_status: unknown kind {unknown[0]!r}; one of {', '.join(KINDS)}")


def parse_fail_status(items: list[str]) -> dict[str, int]:
    """``KIND=STATUS`` arguments (``--fail-status sendbulk=503``) as the knob."""
    fail_status = {}
    for item in items:
        kind, _, status = item.partition("=")
        if not status.strip().isdigit():
            raise ValueError(f"--fail-status: {item!r} is not KIND=STATUS")
        fail_status[kind.strip()] = int(status)
    check_knob("fail_status", fail_status)
    check_kinds(fail_status)
    return fail_status


async def _stop_hanging(app: web.Application) -> None:
    app[STATE].stopping.set()


async def _reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.json_response({"reset": True})


def make_app(settings: SandboxSettings | None = None) -> web.Application:
    """The sandbox: all four provider APIs plus `/_sandbox/` inspection."""
    app = web.Application(middlewares=[_faults], client_max_size=MAX_BODY_BYTES)
    app[STATE] = SandboxState(settings if settings is not None else SandboxSettings())
    check_kinds(app[STATE].settings.fail_status)
    for provider in SANDBOXES.values():
        provider.setup(app)
    app.router.add_get("/_sandbox/stats", _stats)
    app.router.add_get("/_sandbox/sent", _sent)
    app.router.add_get("/_sandbox/rate", _rate)
    app.router.add_get("/_sandbox/settings", _get_settings)
    app.router.add_post("/_sandbox/settings", _post_settings)
    app.router.add_post("/_sandbox/reset", _reset)
    app.on_shutdown.append(_stop_hanging)
    return app


def run_sandbox(
    host: str = "127.0.0.1", port: int = 8025, settings: SandboxSettings | None = None
) -> None:
    """Serve the sandbox until interrupted (the `smsbulk sandbox` command)."""
    app = make_app(settings)
    web.run_app(app, host=host, port=port, access_log=None, shutdown_timeout=2.0)
