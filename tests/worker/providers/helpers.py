"""Building accounts and recipients for adapter tests."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from worker.ops.config import parse_account
from worker.providers.base import Adapter, JobContext, Recipient, SendResult


def account(kind: str, **table: Any):  # type: ignore[no-untyped-def]
    base: dict[str, Any] = {
        "kind": kind,
        "base_url": "https://provider.example",
        "default_region": "RO",
    }
    base.update(table)
    return parse_account(kind, base)


def recipient(index: int, address: str, text: str | None = "hello", **kw: Any) -> Recipient:
    fields: dict[str, Any] = {
        "e164": "+" + address.lstrip("0"),
        "params": None,
        "sender": None,
        "segments": 1,
    }
    fields.update(kw)
    return Recipient(index=index, address=address, text=text, **fields)


CONTEXT = JobContext(job_id="job", template_id=None, schedule_at=None, validity_minutes=None)


@dataclass
class Captured:
    """One request as the provider received it."""

    method: str
    path: str
    headers: dict[str, str]
    content_type: str
    body: bytes


@dataclass
class Exchange:
    """What `send_to_local` sent and what the adapter made of the answer."""

    request: Captured
    result: SendResult


def send_to_local(
    make_adapter: Callable[[str], Adapter],
    batch: Sequence[Recipient],
    answer: bytes,
    status: int = 200,
    context: JobContext = CONTEXT,
    headers: dict[str, str] | None = None,
) -> Exchange:
    """Run ``adapter.send`` against a local aiohttp server answering `answer`.

    `make_adapter` gets the server's base URL, so the real account parsing,
    URL building, auth and body encoding are all exercised.
    """
    captured: list[Captured] = []

    async def handler(request: web.Request) -> web.Response:
        captured.append(
            Captured(
                request.method,
                request.path,
                dict(request.headers),
                request.content_type,
                await request.read(),
            )
        )
        return web.Response(
            status=status, body=answer, content_type="application/json", headers=headers
        )

    async def main() -> SendResult:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        async with TestServer(app) as server, aiohttp.ClientSession() as session:
            adapter = make_adapter(str(server.make_url("")).rstrip("/"))
            return await adapter.send(session, batch, context)

    result = asyncio.run(main())
    assert len(captured) == 1, f"{len(captured)} requests sent"
    return Exchange(captured[0], result)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def assert_requests_partition(
    recipients: Sequence[Recipient],
    groups: Sequence[Sequence[Recipient]],
    batch_size: int,
    burst_parts: int,
) -> None:
    """What every by-number adapter's grouping must hold (docs/INTERFACE.md, "A job")."""
    assert sorted(r.index for g in groups for r in g) == sorted(r.index for r in recipients)
    for group in groups:
        assert group, "an empty request"
        assert len(group) <= batch_size
        assert len({r.address for r in group}) == len(group), "a number twice in one request"
        assert len(group) == 1 or sum(r.cost_parts for r in group) <= burst_parts
