"""Per-process runtime: an event loop with its aiohttp session and Redis
client (a ``Lane``), and in a threads-pool process a second lane for
high-priority chunks.

Celery 5 has no async tasks, and ``asyncio.run`` per task breaks a shared
``ClientSession`` ("Event loop is closed"). So each worker process keeps one
loop for its whole life and runs every task's coroutine on it; the session
(reused connections, timeouts) and the async Redis client live on that loop.

A prefork child runs one task at a time, in its main thread: the loop runs
there, inside each task (``run_until_complete``), so Celery's time limits
interrupt it as they interrupt any task. A threads pool runs many tasks at
once in one process, each in a thread of its own: the loop then runs in a
thread of its own (``shared``), and each task hands it its coroutine and
waits, so the process has as many chunks in flight as it has task threads;
there the task time limit is this wait's (Celery enforces none for threads).

Created lazily on first use in the process (fork-safe: keyed by pid;
thread-safe) and closed at shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
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

# An interrupted task (a soft time limit) waits this long for its cancelled
# coroutine, well within the 2 s Celery leaves before its hard limit kills
# the process: a pass's commits are shielded (``finish``) and end on the
# loop by themselves.
CANCEL_WAIT_S = 0.5
CLOSE_WAIT_S = 10.0
CONNECT_TIMEOUT_S = 10.0
CONNECTIONS_PER_HOST = 32
# Never send on a connection idle longer than this: aiohttp keeps them 15 s,
# and servers close idle ones sooner (Node and Apache after 5 s, gunicorn 2 s),
# which turns a request written onto such a connection into a lost answer.
# The adapters also refuse a connection whose close is waiting unread
# (providers/base.py), for servers quicker still.
IDLE_CONNECTION_S = 1.5
# A threads-pool process: a thread waking from I/O (a high lane's loop, a
# plan task's Redis call) waits at most this for the GIL held by the main
# loop's CPU work (Python's default 5 ms; 1 ms halved a one-time code's
# remaining wait, and no throughput figure moved: docs/ARCHITECTURE.md).
GIL_SWITCH_S = 0.001


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


class Lane:
    """One event loop and what lives on it: the Redis client and the stores
    on it, and the aiohttp session. ``threaded``: the loop runs in a thread
    of its own and tasks hand it their coroutines; else it runs inside each
    ``run`` (a prefork child's one task at a time)."""

    def __init__(self, name: str, redis_url: str, timing: Timing, threaded: bool) -> None:
        self.timing = timing
        self.loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
            self._thread.start()
        # Ride out a Redis restart or failover, like producer.client.connect:
        # a commit waits for the server to come back.
        self.redis = async_client(redis_url, **riding_out_async(REDIS_RETRIES))
        self.store = ResultsStore(self.redis)
        self.limiter = RateLimiter(self.redis)
        self.guards = AccountGuards(Circuits(self.redis), DailyCaps(self.redis))
        self.session = self.run(_new_session(timing.request_timeout_s))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the lane's loop and return its result.
        Threaded: wait for it at most the task time limit; if the waiting
        thread is interrupted, the coroutine is cancelled, and given a moment
        to end, before the interruption goes on."""
        if self._thread is None:
            return self.loop.run_until_complete(coroutine)
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

    def close(self) -> None:
        async def _close() -> None:
            await self.session.close()
            await self.redis.aclose()

        try:
            self.run(_close())
        finally:
            if self._thread is not None:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(timeout=CLOSE_WAIT_S)
            if not self.loop.is_running():
                self.loop.close()


class Runtime:
    """The process's lanes, its configuration and its adapters.

    Shared (a threads pool): high-priority chunks run on a loop of their own
    (``lane(high=True)``). One loop carries 32 chunks of a campaign, and
    every await of a chunk waits behind the CPU work the others queued on
    it: a one-time code's pass took 200-350 ms from its first step to its
    request there, with a saturated campaign on the loop. On its own loop
    it waits only for the GIL."""

    def __init__(self, config: Config, redis_url: str, shared: bool = False) -> None:
        self.pid = os.getpid()
        self.shared = shared  # the loops run in their own threads, for many task threads
        self.config = config
        self.timing = Timing.from_recovery(config.settings.recovery_s)
        if shared:
            sys.setswitchinterval(GIL_SWITCH_S)
        self.main = Lane("smsbulk-loop", redis_url, self.timing, threaded=shared)
        self.high = (
            Lane("smsbulk-high-loop", redis_url, self.timing, threaded=True)
            if shared
            else self.main
        )
        self.store = self.main.store
        self.limiter = self.main.limiter
        self.guards = self.main.guards
        self.session = self.main.session
        self._adapters: dict[str, Adapter] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.main.loop

    def lane(self, high: bool) -> Lane:
        return self.high if high else self.main

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the main lane's loop (``Lane.run``)."""
        return self.main.run(coroutine)

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
        try:
            if self.high is not self.main:
                self.high.close()
        finally:
            self.main.close()


_runtime: Runtime | None = None
_creating = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    runtime = _runtime
    if runtime is not None and runtime.pid == os.getpid():
        return runtime
    with _creating:
        if _runtime is None or _runtime.pid != os.getpid():
            # A task in a thread other than the main one: a threads pool's.
            shared = threading.current_thread() is not threading.main_thread()
            _runtime = Runtime(load_config(), redis_url_from_env(), shared)
        return _runtime


def close_runtime() -> None:
    global _runtime
    if _runtime is not None and _runtime.pid == os.getpid():
        _runtime.close()
    _runtime = None
