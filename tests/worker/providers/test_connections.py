"""Kept-alive connections that the provider closed, through the workers' own session.

A worker's event loop runs only while a task runs (worker/runtime.py), so a
provider that closes an idle connection between two tasks leaves its FIN
unread until the next request has been written onto that connection: the
provider never read it, yet aiohttp reports ``ServerDisconnectedError``,
which reads as "answer lost" (``unknown`` under at_most_once). The
providers here run in a thread of their own, on 127.0.0.1 at a port the OS
picks, so that blocking the client's loop (``time.sleep``) is exactly a
worker between two tasks.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
from aiohttp import web

from tests.worker.providers.helpers import account, recipient
from worker.dev.sandbox.app import (
    SANDBOX_API_KEY,
    SANDBOX_PARTNER_ID,
    SANDBOX_SHORTCODE,
    STATE,
    make_app,
)
from worker.pipeline.outcomes import from_result
from worker.providers.base import JobContext, SendResult, Verdict
from worker.providers.sendbulk import SendbulkAdapter
from worker.runtime import IDLE_CONNECTION_S, new_session

CONTEXT = JobContext(job_id="job", template_id=None, schedule_at=None, validity_minutes=None)
TIMEOUT_S = 30.0
BATCH = [recipient(0, "40712345678"), recipient(1, "40712345679")]


@contextmanager
def provider_in_thread(app: web.Application, keepalive_s: float) -> Iterator[str]:
    """Serve `app` from another thread, closing connections idle `keepalive_s`."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, keepalive_timeout=keepalive_s, access_log=None)
    ready = threading.Event()
    port: list[int] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port.append(runner.addresses[0][1])
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30), "the provider did not start"
    try:
        yield f"http://127.0.0.1:{port[0]}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


def sandbox_adapter(base_url: str) -> SendbulkAdapter:
    return SendbulkAdapter(
        account(
            "sendbulk",
            base_url=base_url,
            partner_id=SANDBOX_PARTNER_ID,
            api_key=SANDBOX_API_KEY,
            shortcode=SANDBOX_SHORTCODE,
        )
    )


def send_twice_idle_between(keepalive_s: float, idle_s: float) -> tuple[list[SendResult], int]:
    """Two requests to the sandbox, the loop blocked `idle_s` in between (a
    worker between tasks); the results and the requests the sandbox read."""
    app = make_app()

    async def main(base_url: str) -> list[SendResult]:
        adapter = sandbox_adapter(base_url)
        async with new_session(TIMEOUT_S) as session:
            first = await adapter.send(session, BATCH, CONTEXT)
            time.sleep(idle_s)  # the provider closes the connection meanwhile; nobody reads it
            second = await adapter.send(session, BATCH, CONTEXT)
        return [first, second]

    with provider_in_thread(app, keepalive_s) as base_url:
        results = asyncio.run(main(base_url))
    return results, app[STATE].requests


def verdicts(result: SendResult) -> list[Verdict]:
    return [r.verdict for r in result.results]


def test_requests_3_s_apart_to_a_provider_closing_idle_connections_after_2_s_succeed() -> None:
    results, requests = send_twice_idle_between(keepalive_s=2, idle_s=3)
    assert [verdicts(r) for r in results] == [[Verdict.ACCEPTED] * 2] * 2
    assert requests == 2


def test_a_connection_the_provider_closed_sooner_than_our_idle_limit_is_not_written_to() -> None:
    """Our own limit cannot know every server's: a connection whose close is
    waiting unread is noticed before a byte is written, and the request goes
    on a new connection at once."""
    assert IDLE_CONNECTION_S > 0.8
    results, requests = send_twice_idle_between(keepalive_s=0.3, idle_s=0.8)
    assert [verdicts(r) for r in results] == [[Verdict.ACCEPTED] * 2] * 2
    assert requests == 2


class _ClosedBeforeWriting(aiohttp.TCPConnector):
    """Hands out connections whose transport is already closing, as when the
    provider's close is read between taking a connection and writing to it."""

    async def connect(self, *args: Any, **kwargs: Any) -> Any:
        connection = await super().connect(*args, **kwargs)
        assert connection.transport is not None
        connection.transport.close()
        return connection


def test_a_request_that_failed_before_any_byte_was_written_is_could_not_connect() -> None:
    app = make_app()

    async def main(base_url: str) -> SendResult:
        async with aiohttp.ClientSession(connector=_ClosedBeforeWriting()) as session:
            return await sandbox_adapter(base_url).send(session, BATCH, CONTEXT)

    with provider_in_thread(app, keepalive_s=75) as base_url:
        result = asyncio.run(main(base_url))
    assert app[STATE].requests == 0
    assert verdicts(result) == [Verdict.RETRY] * 2
    assert {r.error_code for r in result.results} == {"connect"}
    # Retried under both policies: never unknown.
    adapter = sandbox_adapter("http://127.0.0.1:9")
    for at_most_once in (True, False):
        outcome = from_result(adapter.account, at_most_once, BATCH[0], result.results[0], 1)
        assert outcome.status == "pending"


def test_a_request_written_and_then_cut_off_stays_uncertain() -> None:
    """The provider read it and closed without answering: it may have been sent."""
    read: list[bytes] = []

    async def read_then_hang_up(request: web.Request) -> web.Response:
        read.append(await request.read())
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    app = web.Application()
    app.router.add_post("/api/services/sendbulk", read_then_hang_up)

    async def main(base_url: str) -> SendResult:
        async with new_session(TIMEOUT_S) as session:
            return await sandbox_adapter(base_url).send(session, BATCH, CONTEXT)

    with provider_in_thread(app, keepalive_s=75) as base_url:
        result = asyncio.run(main(base_url))
    assert len(read) == 1
    assert verdicts(result) == [Verdict.UNCERTAIN] * 2
    adapter = sandbox_adapter("http://127.0.0.1:9")
    outcome = from_result(adapter.account, True, BATCH[0], result.results[0], 1)
    assert outcome.status == "unknown"
