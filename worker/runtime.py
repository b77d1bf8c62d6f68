"""Per-process runtime: one event loop, one aiohttp session, one Redis client.

Celery 5 has no async tasks, and ``asyncio.run`` per task breaks a shared
``ClientSession`` ("Event loop is closed"). So each worker process keeps one
loop for its whole life, running in a thread of its own, and every task
hands its coroutine to it and waits (``run``): the tasks of a threads pool
(several in one process) then share the loop, the session (reused
connections, timeouts) and the async Redis client, so a process has as many
chunks in flight as it has task threads, at the cost of one loop. Created
lazily on first use in the process (fork-safe: keyed by pid; thread-safe)
and closed at process shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp

from producer.client import REDIS_RETRIES, redis_url_from_env
from producer.core.connection import async_client, riding_out_async
from producer.routes import Route
from worker.ops.config import Config, load_config
from worker.ops.timing import Timing
from worker.pipeline.circuit import Circuits
from worker.pipeline.daily_cap import DailyCaps
from worker.pipeline.guards import AccountGuards
from worker.pipeline.rate_limit import RateLimiter
from worker.providers.account import Account
from worker.providers.base import Adapter
from worker.providers.registry import adapter_class
from worker.store import ResultsStore

T = TypeVar("T")

CANCEL_WAIT_S = 10.0  # an interrupted task waits this long for its coroutine to end
CONNECT_TIMEOUT_S = 10.0
CONNECTIONS_PER_HOST = 32
# Never send on a connection idle longer than this: aiohttp keeps them 15 s,
# and servers close idle ones sooner (Node and Apache after 5 s, gunicorn 2 s),
# which turns a request written onto such a connection into a lost answer.
# The adapters also refuse a connection whose close is waiting unread
# (providers/base.py), for servers quicker still.
IDLE_CONNECTION_S = 1.5


def new_session(timeout_s: float) -> aiohttp.ClientSession:
    """The session a worker process sends every provider request through.

    Call it inside the loop it is for: aiohttp binds a session to the running loop.
    """
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(
            total=timeout_s, sock_connect=min(CONNECT_TIMEOUT_S, timeout_s)
        ),
        connector=aiohttp.TCPConnector(
            limit_per_host=CONNECTIONS_PER_HOST, keepalive_timeout=IDLE_CONNECTION_S
        ),
    )


async def _new_session(timeout_s: float) -> aiohttp.ClientSession:
    return new_session(timeout_s)


class Runtime:
    def __init__(self, config: Config, redis_url: str) -> None:
        self.pid = os.getpid()
        self.config = config
        self.timing = Timing.from_recovery(config.settings.recovery_s)
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self.loop.run_forever, name="smsbulk-loop", daemon=True
        )
        self._loop_thread.start()
        # Ride out a Redis restart or failover, like producer.client.connect:
        # a commit waits for the server to come back.
        self.redis = async_client(redis_url, **riding_out_async(REDIS_RETRIES))
        self.store = ResultsStore(self.redis)
        self.limiter = RateLimiter(self.redis)
        self.guards = AccountGuards(Circuits(self.redis), DailyCaps(self.redis))
        self._adapters: dict[str, Adapter] = {}
        self.session = self.run(_new_session(self.timing.request_timeout_s))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the process's loop and wait for its result.
        If the waiting thread is interrupted (a soft time limit, a shutdown),
        the coroutine is cancelled and awaited before the interruption goes on,
        as when the loop ran in the task's own thread."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            # A threads pool enforces no task time limit: this is it there
            # (a prefork child is stopped by Celery's first).
            return future.result(timeout=self.timing.task_time_limit_s + 1)
        except BaseException:
            if not future.done():
                future.cancel()
                concurrent.futures.wait([future], timeout=CANCEL_WAIT_S)
            raise

    def route(self, provider: str) -> Route | None:
        return self.config.routes.get(provider)

    def account_for(self, provider: str) -> Account | None:
        """A job's account: the one it names, or its route's first of the
        default list (whose rate limit a pass takes capacity from first)."""
        route = self.route(provider)
        return self.config.accounts.get(route.accounts[0] if route else provider)

    def chunk_size_for(self, provider: str) -> int | None:
        """A job's chunk: its account's batch; on a route, the largest batch
        of its accounts (each account groups its share of a chunk itself)."""
        route = self.route(provider)
        if route is None:
            account = self.config.accounts.get(provider)
            return account.batch_size if account else None
        return max(self.config.accounts[name].batch_size for name in route.every_account())

    def adapters_for(self, route: Route) -> dict[str, Adapter]:
        return {name: self.adapter(self.config.accounts[name]) for name in route.every_account()}

    def adapter(self, account: Account) -> Adapter:
        adapter = self._adapters.get(account.name)
        if adapter is None:
            adapter = adapter_class(account.kind)(account)
            self._adapters[account.name] = adapter
        return adapter

    def close(self) -> None:
        async def _close() -> None:
            await self.session.close()
            await self.redis.aclose()

        try:
            self.run(_close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._loop_thread.join(timeout=CANCEL_WAIT_S)
            if not self.loop.is_running():
                self.loop.close()


_runtime: Runtime | None = None
_creating = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    runtime = _runtime
    if runtime is not None and runtime.pid == os.getpid():
        return runtime
    with _creating:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = Runtime(load_config(), redis_url_from_env())
        return _runtime


def close_runtime() -> None:
    global _runtime
    if _runtime is not None and _runtime.pid == os.getpid():
        _runtime.close()
    _runtime = None
