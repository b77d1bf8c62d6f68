"""Run an async scenario against an in-process sandbox app (aiohttp test client)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from worker.dev.sandbox.app import SandboxSettings, make_app

Client = TestClient[web.Request, web.Application]
Scenario = Callable[[Client], Awaitable[None]]
Runner = Callable[..., None]


def _run(scenario: Scenario, settings: SandboxSettings | None = None) -> None:
    async def main() -> None:
        async with TestClient(TestServer(make_app(settings))) as client:
            await scenario(client)

    asyncio.run(main())


class Probe:
    """The inspection endpoints, as tests read them."""

    async def stats(self, client: Client) -> dict[str, Any]:
        response = await client.get("/_sandbox/stats")
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body

    async def sent(self, client: Client, kind: str | None = None) -> list[dict[str, Any]]:
        response = await client.get("/_sandbox/sent", params={"kind": kind} if kind else {})
        assert response.status == 200
        assert response.content_type == "application/x-ndjson"
        return [json.loads(line) for line in (await response.text()).splitlines()]


@pytest.fixture
def sandbox() -> Runner:
    """`sandbox(scenario, settings=None)` runs `await scenario(client)` once."""
    return _run


@pytest.fixture
def probe() -> Probe:
    return Probe()
