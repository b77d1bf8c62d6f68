"""One pass over a chunk: recover, prepare, group, send, record.

A chunk's provider requests are recorded pending -> sending -> done. A pass
first settles requests a killed worker left in ``sending`` (the job's
delivery policy decides: ``unknown`` under at_most_once, sent again under
at_least_once), then sends every recipient that is still pending, each
request after taking its parts from the account's global rate limit. It
returns when the chunk should be looked at again, if it should: after a
retryable failure's backoff, or when the rate limit has room again.

A pass holds its chunk's lease, and its requests live and die with it: they
run in one ``asyncio.TaskGroup``, so an exception that escapes one request
cancels the others before the pass ends (and its lease is released), and a
request begins only while the pass still holds the lease and the request is
still pending (one script). A request cancelled mid-POST stays ``sending``
and the next pass settles it like a killed worker's; a provider's answer
once read is still recorded. An exception that escapes the adapter (an
answer it cannot read, or a bug of its own) is that request's answer: whether
the provider took it is unknown.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
import redis.asyncio as aioredis

from producer.core.keys import PREFIX
from producer.core.store import StoredMessage, StoredOutcome, now_s
from producer.routes import Route
from worker.ops import metrics
from worker.ops.logs import get_logger
from worker.ops.timing import Timing
from worker.pipeline.chunking import chunk_range
from worker.pipeline.dedupe import Dedupe
from worker.pipeline.guards import AccountGuards
from worker.pipeline.optout import REASON as OPTED_OUT
from worker.pipeline.optout import opted_out
from worker.pipeline.outcomes import Place, from_result, is_final, simple
from worker.pipeline.rate_limit import Decision, Limits, RateLimiter
from worker.pipeline.recipients import Rejection, prepare
from worker.pipeline.recipients import route as route_recipients
from worker.pipeline.retry import retry_delay_s
from worker.pipeline.send_window import Window, WindowClock
from worker.pipeline.spend_cap import SpendCap, refund_units
from worker.providers.account import Account
from worker.providers.base import (
    Adapter,
    JobContext,
    Recipient,
    SendResult,
    Verdict,
    all_of,
)
from worker.store import NOTHING_WRITTEN, ChunkData, JobRecord, ResultsStore, new_token

T = TypeVar("T")
REQUESTS_IN_FLIGHT_PER_CHUNK = 4
INLINE_WAIT_MAX_S = 0.5  # longer waits give the worker back (the chunk is deferred)
# A request that fits the account's rate within this long takes its capacity
# at once and waits for its slot: a saturated account then sends at its
# limit, where asking again after each wait left a gap of a round trip and a
# wake-up each time (170-181 parts/s at a limit of 200, burst 1 s, requests
# of 200 parts over 4 workers; 199.5 booked).
BOOK_AHEAD_S = 0.5


class Stopped(enum.Enum):
    """_acquire's answer for an account stopped meanwhile (bad credentials)."""

    ACCOUNT = "account stopped"


RETURNS_PER_SLOT = 3  # deferred chunks of an account that come back per request it can send
# durable_sends: how long a request's sending state may wait to be on a
# replica or on disk (docs/INTERFACE.md: a second), and how soon the chunk's
# next pass tries again a request that could not have it.
DURABLE_TIMEOUT_MS = 1000
NOT_DURABLE_RETRY_S = 1.0
DEFERRED_GRACE_S = 10.0  # a deferred chunk is counted this long past its latest countdown


@dataclass(slots=True)
class PassResult:
    next_pass_in_s: float | None = None  # None: nothing left for this chunk to do
    stopped: bool = False  # the job was paused or cancelled mid-pass: not done either
    lost: bool = False  # the chunk's lease or a request is no longer this pass's
    # > 0: the next pass waits for rate-limit capacity, for a first request of
    # this many parts (it takes them before it reads the chunk again).
    deferred_parts: int = 0

    @property
    def chunk_done(self) -> bool:
        """Nothing left for this chunk: no pass follows, and none is owed by a resume."""
        return self.next_pass_in_s is None and not self.stopped and not self.lost


def limits_of(account: Account) -> Limits:
    return Limits(account.messages_per_second, account.requests_per_second, account.burst_s)


def request_slot_s(account: Account, parts: int) -> float:
    """How long a request of ``parts`` parts takes of the account's rates."""
    return max(parts / account.messages_per_second, 1 / account.requests_per_second)


def deferral_s(
    wait_s: float,
    slot_s: float,
    waiting: int,
    cap_s: float,
    rng: random.Random | None = None,
) -> float:
    """When a chunk refused rate-limit capacity comes back (pure).

    A refusal takes nothing, so every chunk of an account refused between
    two sends is told to come back at the same instant, and all but one of
    them would find no capacity again. So a chunk comes back after its wait
    at a random point of a window that grows with the ``waiting`` chunks of
    its account: they come back spread over the time the account needs for
    them (``slot_s``, the time one such request takes of the account's rate,
    each), ``RETURNS_PER_SLOT`` of them per request the account can send. So
    the account's capacity is always taken, and a backlog of any size costs
    a few cheap checks per request sent rather than a storm of tasks. A
    chunk alone comes back after its wait plus up to a tenth of it. Never
    later than ``cap_s``; a wait beyond it comes back in its second half.
    """
    draw = (rng or random).uniform
    if wait_s >= cap_s:
        return draw(cap_s / 2, cap_s)
    window = max(waiting * slot_s / RETURNS_PER_SLOT, wait_s / 10)
    return min(cap_s, wait_s + draw(0, window))


def deferred_key(account_name: str) -> str:
    """The account's chunks waiting for capacity: a sorted set of
    ``job:chunk`` scored by when each stops counting (``note_deferred``)."""
    return f"{PREFIX}:deferred:{account_name}"


async def note_deferred(
    client: aioredis.Redis, account_name: str, job_id: str, chunk_no: int, cap_s: float
) -> int:
    """List the chunk among its account's deferred chunks (until its longest
    countdown and a grace have passed, or it gets capacity), and return how
    many others are listed."""
    key, now = deferred_key(account_name), now_s()
    pipe = client.pipeline(transaction=False)
    pipe.zremrangebyscore(key, "-inf", now)
    pipe.zadd(key, {f"{job_id}:{chunk_no}": now + cap_s + DEFERRED_GRACE_S})
    pipe.zcard(key)
    pipe.expire(key, int(cap_s + DEFERRED_GRACE_S) + 1)
    _, _, listed, _ = await pipe.execute()
    return max(int(listed) - 1, 0)


async def come_back_in_s(
    client: aioredis.Redis,
    account: Account,
    job: JobRecord,
    chunk_no: int,
    wait_s: float,
    parts: int,
    cap_s: float,
) -> float:
    """When a chunk refused capacity for a request of ``parts`` parts comes
    back (``deferral_s``), spread among its account's deferred chunks. A
    high-priority chunk is not one of them: it comes back after its own wait
    (a one-time code spread over a campaign's backlog waited seconds), and
    its reserve (rate_limit.py) makes room for it then."""
    slot_s = request_slot_s(account, parts)
    if job.settings.priority == "high":
        return deferral_s(wait_s, slot_s, 0, cap_s)
    waiting = await note_deferred(client, account.name, job.job_id, chunk_no, cap_s)
    return deferral_s(wait_s, slot_s, waiting, cap_s)


async def until_booked_slot(account: Account, decision: Decision) -> None:
    """Sleep until the slot an allowed request was booked for (none: at once)."""
    if decision.wait_s:
        metrics.record_rate_wait(account, decision.wait_s, deferred=False)
        await asyncio.sleep(decision.wait_s)


async def defer_unless_capacity(
    store: ResultsStore,
    limiter: RateLimiter,
    account: Account,
    job: JobRecord,
    chunk_no: int,
    parts: int,
    timing: Timing,
) -> PassResult | None:
    """A pass's first step, before it reads or parses anything: take
    capacity for its first request, of ``parts`` parts if a deferral said so,
    else of one (None: taken, the pass goes on and its first request uses
    it), or return the deferral that follows: a chunk of a saturated account
    costs one limiter call and no worker time. A chunk past its validity
    goes on at once, to expire its recipients (and takes nothing: the pass
    sends nothing then)."""
    deadline = deadline_s(job)
    if deadline is not None and now_s() > deadline:
        return None
    cost = max(parts, 1)
    # Booked at most one request's time of the account ahead: about one chunk
    # of a saturated account sleeps in a worker process for its slot, the
    # others are deferred (booking BOOK_AHEAD_S here let an account of 10
    # requests/s keep every process of 4 asleep, and other jobs waited).
    horizon_s = min(BOOK_AHEAD_S, request_slot_s(account, cost))
    high = job.settings.priority == "high"
    decision = await limiter.try_acquire(
        account.name, limits_of(account), cost, horizon_s, leave_reserve=not high
    )
    if decision.allowed:
        if parts:
            await store.redis.zrem(deferred_key(account.name), f"{job.job_id}:{chunk_no}")
        await until_booked_slot(account, decision)
        return None
    metrics.record_rate_wait(account, decision.wait_s, deferred=True)
    wait_s = await come_back_in_s(
        store.redis, account, job, chunk_no, decision.wait_s, cost, timing.max_countdown_s
    )
    get_logger().debug("chunk_deferred", job_id=job.job_id, chunk=chunk_no, wait_s=round(wait_s, 3))
    return PassResult(next_pass_in_s=wait_s, deferred_parts=cost)


async def finish(coroutine: Coroutine[Any, Any, T]) -> T:
    """Await ``coroutine`` to its end even if the caller is cancelled
    meanwhile, then pass the cancellation on: a provider's answer that was
    read is recorded, and the cancelled request still ends with its pass."""
    task = asyncio.ensure_future(coroutine)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            get_logger().warning("finish_failed", error=type(task.exception()).__name__)
        raise


def deadline_s(job: JobRecord) -> float | None:
    """Validity counts from schedule_at, else from the job's creation."""
    minutes = job.settings.validity_minutes
    if not minutes:
        return None
    schedule_s = job.settings.schedule_s
    start_s = schedule_s if schedule_s is not None else job.created_at
    return float(start_s + minutes * 60)


async def fail_chunk(store: ResultsStore, job: JobRecord, chunk_no: int, reason: str) -> None:
    """Fail every pending recipient of a chunk that cannot be sent at all."""
    indices = chunk_range(chunk_no, job.total, job.chunk_size)
    data = await store.chunk(job.job_id, chunk_no, indices)
    failed = {
        i: simple("failed", data.outcomes.get(i), error=reason)
        for i, _ in data.messages
        if not is_final(data.outcomes.get(i))
    }
    if failed:
        await store.commit(job.job_id, chunk_no, failed)
    await store.mark_chunk_done(job, chunk_no)


class ChunkSender:
    """One pass over a chunk. A route job's recipients go through the
    accounts of their lists (``route``, ``adapters``); a one-account job's
    through ``adapter``'s account. Requests never mix accounts; each account
    keeps its own rate limits, batch size, number format, retries and circuit."""

    def __init__(
        self,
        store: ResultsStore,
        limiter: RateLimiter,
        adapter: Adapter,
        job: JobRecord,
        chunk_no: int,
        timing: Timing,
        lease_token: str = "",
        prepaid_parts: int = 0,
        route: Route | None = None,
        adapters: Mapping[str, Adapter] | None = None,
        guards: AccountGuards | None = None,
        default_timezone: str = "UTC",
        durable_ms: int = 0,
    ) -> None:
        self.store = store
        self.durable_ms = durable_ms  # durable_sends: how long a sending state may wait for it
        self.limiter = limiter
        self.adapter = adapter  # a route job's: its default list's first account's
        self.account = adapter.account
        self.route = route
        self.adapters = dict(adapters or {adapter.account.name: adapter})
        self.guards = guards or AccountGuards()
        self.default_timezone = default_timezone  # send windows: a number of no known zone
        self.lease_token = lease_token  # the chunk's lease this pass holds
        self.prepaid_parts = prepaid_parts  # capacity taken for adapter's account before the pass
        self.job = job
        self.chunk_no = chunk_no
        self.timing = timing
        self.at_most_once = job.settings.at_most_once
        self.high = job.settings.priority == "high"  # may take the limiter's reserve
        minutes, template_id = job.settings.dedupe_minutes, job.settings.template_id
        self.dedupe = Dedupe(store.redis, job.job_id, minutes, template_id) if minutes else None
        cap = job.settings.max_cost
        self.spend = SpendCap(store.redis, job.job_id, cap) if cap is not None else None
        self.context = JobContext(
            job_id=job.job_id,
            template_id=job.settings.template_id,
            schedule_at=job.settings.schedule_at,
            validity_minutes=job.settings.validity_minutes,
            created_at=datetime.fromtimestamp(job.created_at, UTC).isoformat(),
        )
        self.log = get_logger(job_id=job.job_id, chunk=chunk_no, provider=job.settings.provider)
        self._started = time.monotonic()
        self._inline_until: float | None = None  # end of the pass's inline wait for capacity
        self._stopped = False  # a request found the job paused or cancelled
        self._not_durable = False  # durable_sends could not be had: send nothing more
        self._lost = False  # a request found the lease or itself no longer this pass's
        self._deferred: tuple[float, int] | None = None  # (wait, parts) of a refused request
        self._unsent: list[str] = []  # planned requests this pass gave up on
        self._begun: set[str] = set()  # requests this pass marked sending
        self._places: dict[int, Place] = {}  # route jobs: each recipient's place on its list
        self._held_s: float | None = None  # recipients wait for an unavailable account
        self._window_until: float | None = None  # monotonic: a send window admitted closes

    async def _commit(
        self,
        outcomes: dict[int, StoredOutcome],
        request_id: str = "",
        token: str = "",
        done: dict[str, Any] | None = None,
        account: Account | None = None,
    ) -> str:
        """Write outcomes (and a request's end: ``store.commit``) and count
        them in the metrics if they were written; returns the commit's answer."""
        state = await self.store.commit(
            self.job.job_id, self.chunk_no, outcomes, request_id, token, done
        )
        if state not in NOTHING_WRITTEN:
            metrics.record_committed(account or self.account, outcomes.values())
        return state

    async def run(self, session: aiohttp.ClientSession) -> PassResult:
        data = await self._read_chunk()
        pending = [(i, m) for i, m in data.messages if not is_final(data.outcomes.get(i))]
        if not pending or await self._end_unsendable(pending, data):
            return PassResult()
        groups = await self._prepare(pending, data)
        requests = await self._plan(groups)
        waits = await self._send_all(session, requests, data)
        if self._lost:
            return PassResult(lost=True)  # the chunk's next pass is its new holder's
        if self._held_s is not None and all(wait is None for wait in waits):
            waits.append(self._held_s)  # held recipients alone: look again then
        return await self._next_pass(waits)

    async def _read_chunk(self) -> ChunkData:
        """The chunk's messages, outcomes and requests, once the requests a
        killed pass left are settled and those it only planned forgotten."""
        indices = chunk_range(self.chunk_no, self.job.total, self.job.chunk_size)
        data = await self.store.chunk(self.job.job_id, self.chunk_no, indices)
        await self._settle_interrupted(data)
        await self.store.drop_requests(
            self.job.job_id,
            self.chunk_no,
            [rid for rid, state in data.requests.items() if state.get("s") == "pending"],
        )
        return data

    async def _end_unsendable(
        self, pending: list[tuple[int, StoredMessage]], data: ChunkData
    ) -> bool:
        """Expire the pending recipients past the job's validity, or fail
        those of a one-account job whose account is stopped: True if it did
        (the pass sends nothing)."""
        blocked = None if self.route else await self.store.account_blocked(self.account.name)
        deadline = deadline_s(self.job)
        if not blocked and (deadline is None or now_s() <= deadline):
            return False
        status, reason = ("failed", blocked) if blocked else ("expired", "validity passed")
        await self._commit(
            {i: simple(status, data.outcomes.get(i), error=reason) for i, _ in pending}
        )
        return True

    async def _prepare(
        self, pending: list[tuple[int, StoredMessage]], data: ChunkData
    ) -> dict[str, list[Recipient]]:
        """The pending recipients to send, by account; the others (an
        unusable number or text, an opted-out number; on a route, a recipient
        whose accounts are all stopped) are recorded ``rejected`` (or ``failed``)."""
        settings = self.job.settings
        now = datetime.now(UTC)
        if self.route is None:
            clock = self._clock(self.account, now)
            recipients, rejections = prepare(
                self.adapter,
                pending,
                settings.text,
                settings.sender,
                settings.transliterate,
                clock,
            )
            groups = {self.account.name: recipients}
            clocks = [clock] if clock is not None else []
        else:
            windows = {
                name: clock
                for name in self.route.every_account()
                if (clock := self._clock(self.adapters[name].account, now)) is not None
            }
            clocks = list(windows.values())
            stopped, moving, holding = await self._availability()
            routed = route_recipients(
                self.route,
                self.adapters,
                pending,
                data.outcomes,
                settings.text,
                settings.sender,
                stopped,
                moving,
                frozenset(holding),
                settings.transliterate,
                windows,
            )
            groups, rejections, self._places = routed.groups, routed.rejections, routed.places
            if routed.held:
                self._hold(min(holding[name] for name in routed.held_on))
        if clocks:
            self._hold_for_windows(clocks)
        every = [r for group in groups.values() for r in group]
        blocked_numbers = await opted_out(self.store.redis, [r.e164 for r in every])
        if blocked_numbers:
            for name, group in groups.items():
                rejections += [
                    Rejection(r.index, r.e164, r.segments, OPTED_OUT, account=self._on(name))
                    for r in group
                    if r.e164 in blocked_numbers
                ]
                groups[name] = [r for r in group if r.e164 not in blocked_numbers]
        await self._commit(
            {
                r.index: simple(
                    r.status,
                    data.outcomes.get(r.index),
                    e164=r.e164,
                    segments=r.segments,
                    error=r.reason,
                    account=r.account,
                    since=self._places[r.index].since if r.index in self._places else None,
                )
                for r in rejections
            }
        )
        return groups

    def _clock(self, account: Account, now: datetime) -> WindowClock | None:
        """The send window of the account's recipients (the job's, else the
        account's), at ``now``; None without one (nothing is checked)."""
        spec = self.job.settings.send_window or account.send_window
        return None if spec is None else WindowClock(Window.of(spec), self.default_timezone, now)

    def _hold_for_windows(self, clocks: list[WindowClock]) -> None:
        """Once recipients are sorted by their windows: the chunk is looked
        at again when the soonest window of those held back opens (or when
        the job's validity ends, to expire them); the pass sends nothing
        more once a window it admitted closes."""
        closes = [c.closes_in_s for c in clocks if c.closes_in_s is not None]
        if closes:
            self._window_until = time.monotonic() + min(closes)
        opens = [c.opens_in_s for c in clocks if c.opens_in_s is not None]
        if not opens:
            return
        wait_s = self._hold(min(opens))
        self.log.info(
            "recipients_outside_window",
            held=sum(c.held for c in clocks),
            look_again_in_s=round(wait_s, 1),
        )

    def _on(self, name: str) -> str | None:
        """The account field of a route job's outcome (None: a one-account job's)."""
        return name if self.route is not None else None

    async def _availability(self) -> tuple[dict[str, str], frozenset[str], dict[str, float]]:
        """The route's accounts that cannot send now: stopped (bad
        credentials; account → reason); those recipients move away from
        (circuit open, daily cap reached); and of those, the ones whose last
        account it is wait for (account → seconds)."""
        stopped, moving, holding = {}, set(), {}
        for name in self.route.every_account() if self.route else ():
            blocked = await self.store.account_blocked(name)
            if blocked:
                stopped[name] = blocked
                continue
            away, wait_s = await self.guards.availability(self.adapters[name].account)
            if away:
                moving.add(name)
            if wait_s is not None:
                holding[name] = wait_s
        return stopped, frozenset(moving), holding

    async def _plan(
        self, groups: dict[str, list[Recipient]]
    ) -> dict[str, tuple[Adapter, list[Recipient]]]:
        """Group each account's recipients into its provider requests, each
        recorded pending."""
        requests = {
            new_token()[:16]: (self.adapters[name], batch)
            for name, recipients in groups.items()
            for batch in self.adapters[name].group(recipients)
        }
        await self.store.set_requests(
            self.job.job_id,
            self.chunk_no,
            {
                rid: self._request_state("pending", adapter, batch)
                for rid, (adapter, batch) in requests.items()
            },
        )
        return requests

    def _request_state(
        self, state: str, adapter: Adapter, batch: list[Recipient]
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"s": state, "i": [r.index for r in batch]}
        if self.route is not None:
            request["acc"] = adapter.account.name
        return request

    async def _next_pass(self, waits: list[float | None]) -> PassResult:
        """When the chunk's next pass is due, if one is: after the latest of
        its requests' backoffs, so that no retried recipient goes before its
        own, or once the rate limit has room for a refused request."""
        later = [wait for wait in waits if wait is not None]
        deferred_parts = 0
        if self._deferred is not None:
            wait_s, deferred_parts = self._deferred
            later.append(
                await come_back_in_s(
                    self.store.redis,
                    self.account,
                    self.job,
                    self.chunk_no,
                    wait_s,
                    deferred_parts,
                    self.timing.max_countdown_s,
                )
            )
        return PassResult(
            next_pass_in_s=max(later) if later else None,
            stopped=self._stopped,
            lost=self._lost,
            deferred_parts=deferred_parts,
        )

    async def _send_all(
        self,
        session: aiohttp.ClientSession,
        requests: dict[str, tuple[Adapter, list[Recipient]]],
        data: ChunkData,
    ) -> list[float | None]:
        """Send the pass's requests, a few at a time, all in one task group:
        none outlives the pass. On an exception every request still running
        is cancelled, and the requests never begun are forgotten."""
        gate = asyncio.Semaphore(REQUESTS_IN_FLIGHT_PER_CHUNK)

        async def one(request_id: str, adapter: Adapter, batch: list[Recipient]) -> float | None:
            async with gate:
                return await self._send(session, request_id, adapter, batch, data)

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(rid, *request)) for rid, request in requests.items()]
        except BaseExceptionGroup as failed:
            first = _first_error(failed)
            self.log.warning("pass_failed", error=type(first).__name__)
            try:
                await self.store.drop_requests(
                    self.job.job_id,
                    self.chunk_no,
                    [rid for rid in requests if rid not in self._begun],
                )
            except Exception:  # the next pass drops them as well
                self.log.warning("pass_failed_unsent_kept")
            raise first from None
        await self.store.drop_requests(self.job.job_id, self.chunk_no, self._unsent)
        return [task.result() for task in tasks]

    async def _settle_interrupted(self, data: ChunkData) -> None:
        """Requests left in ``sending`` by a worker that died mid-request.
        Never moved on to another account: the provider may have taken them."""
        for request_id, state in data.requests.items():
            if state.get("s") != "sending":
                continue
            on = state.get("acc")
            account = self.adapters[on].account if on in self.adapters else self.account
            settled: dict[int, StoredOutcome] = {}
            for index in state["i"]:
                previous = data.outcomes.get(index)
                if is_final(previous):
                    continue
                attempts = max(state.get("a", 1), previous.attempts if previous else 0)
                since = (previous.since or 0) if previous and previous.account == on else 0
                gave_up = attempts - since >= account.max_attempts
                status = "unknown" if self.at_most_once else ("failed" if gave_up else "pending")
                what = "" if self.at_most_once else ("; gave up" if gave_up else "; sending again")
                settled[index] = data.outcomes[index] = simple(
                    status,
                    previous,
                    attempts=attempts,
                    error_code="interrupted",
                    error=f"the worker stopped while the request was in flight{what}",
                    account=on,
                    since=since if on else None,
                )
            done = {"s": "done", "a": state.get("a", 1), "t": now_s(), "interrupted": True}
            await self._commit(settled, request_id, state["k"], done, account)
            self.log.warning(
                "interrupted_request_settled",
                request=request_id,
                recipients=len(state["i"]),
                policy=self.job.settings.delivery_policy,
                account=account.name,
            )

    async def _acquire(self, account: Account, cost_parts: int) -> float | Stopped | None:
        """Take rate-limit capacity; None when taken, Stopped.ACCOUNT if the
        account is stopped (asked in the limiter's round trip), else the
        wait to defer.

        A pass waits inline at most INLINE_WAIT_MAX_S without getting any
        capacity, then gives its worker process back: a saturated account's
        chunks, however many, never hold every process while other accounts'
        chunks wait in the queue. Capacity taken before the pass
        (``defer_unless_capacity``) pays for the first request."""
        if self.prepaid_parts and account is self.account:
            cost_parts, self.prepaid_parts = (
                max(0, cost_parts - self.prepaid_parts),
                max(0, self.prepaid_parts - cost_parts),
            )
            if cost_parts == 0:
                return None
        while True:
            decision = await self.limiter.try_acquire(
                account.name,
                limits_of(account),
                cost_parts,
                BOOK_AHEAD_S,
                unless_stopped=True,
                leave_reserve=not self.high,
            )
            if decision.stopped:
                return Stopped.ACCOUNT
            if decision.allowed:
                self._inline_until = None
                await until_booked_slot(account, decision)
                return None
            now = time.monotonic()
            if self._inline_until is None:
                self._inline_until = now + INLINE_WAIT_MAX_S
            deferred = now + decision.wait_s > self._inline_until
            metrics.record_rate_wait(account, decision.wait_s, deferred)
            if deferred:
                return decision.wait_s
            await asyncio.sleep(decision.wait_s)

    async def _send(
        self,
        session: aiohttp.ClientSession,
        request_id: str,
        adapter: Adapter,
        batch: list[Recipient],
        data: ChunkData,
    ) -> float | None:
        """Send one request, record its outcomes, and return when its
        recipients left pending are due again (None: none is)."""
        account = adapter.account
        parts = sum(r.cost_parts for r in batch)
        held, wait_s = await self._hold_back(account, parts)
        if held:
            self._unsent.append(request_id)
            return wait_s
        if self.dedupe is not None:
            batch = await self._drop_duplicates(account, batch, data)
            if not batch:
                self._unsent.append(request_id)
                return None
            parts = sum(r.cost_parts for r in batch)
        gate = await self.guards.gate(account, parts)
        if not gate.send:
            self._unsent.append(request_id)
            await self._release(batch)
            return await self._move_on(account, batch, data, gate.wait_s)
        reserved = await self._reserve(request_id, account, batch, parts, data)
        if reserved is None:
            await self.guards.unused(account, parts)
            await self._release(batch)
            return None
        attempt = 1 + max(
            (data.outcomes[r.index].attempts if r.index in data.outcomes else 0) for r in batch
        )
        token = new_token()
        sending = {
            **self._request_state("sending", adapter, batch),
            "a": attempt,
            "t": now_s(),
            "k": token,
        }
        begun = await self._begin(request_id, sending)
        if begun is not True:
            await self.guards.unused(account, parts)
            await self._release(batch)
            await self._refund(account, reserved, batch, batch)
            return begun
        started = time.monotonic()
        sent = await self._post(session, request_id, adapter, batch)
        metrics.record_request(
            account, time.monotonic() - started, len(batch), parts, sent.http_status
        )
        nothing_sent = not_sent(sent)
        await self.guards.record(account, gate, parts, nothing_sent)
        outcomes = {
            r.index: from_result(
                account, self.at_most_once, r, result, attempt, self._places.get(r.index)
            )
            for r, result in zip(batch, sent.results, strict=True)
        }
        if self.dedupe is not None:
            await self._release(batch if nothing_sent else _refused(batch, sent, outcomes))
        if reserved:
            await self._refund(
                account, reserved, batch if nothing_sent else _not_taken(batch, sent), batch
            )
        await self._record(request_id, sending, sent, outcomes, started, account)
        await self._heed(account, sent, outcomes)
        pending = [o for o in outcomes.values() if o.status == "pending"]
        if not pending:
            return None
        if all(o.account not in (None, account.name) for o in pending):
            return 0.0  # every one moved on to its next account: at once
        return retry_delay_s(
            attempt,
            account.retry_base_s,
            account.retry_max_s,
            sent.retry_after_s,
            self.timing.max_countdown_s,
        )

    async def _drop_duplicates(
        self, account: Account, batch: list[Recipient], data: ChunkData
    ) -> list[Recipient]:
        """Claim the request's recipients (``dedupe_minutes``): those another
        send holds are committed ``rejected``, naming it; the rest go on."""
        assert self.dedupe is not None
        duplicates = await self.dedupe.claim(batch)
        if not duplicates:
            return batch
        await self._end_unsent(
            "rejected", [r for r in batch if r.index in duplicates], duplicates, account, data
        )
        return [r for r in batch if r.index not in duplicates]

    async def _reserve(
        self,
        request_id: str,
        account: Account,
        batch: list[Recipient],
        parts: int,
        data: ChunkData,
    ) -> int | None:
        """Reserve the request's cost against the job's ``max_cost``: the
        millionths reserved (0: the job has no cap), or None: not sent. Over
        the cap the job is paused (by the same script) and the pass stops,
        like one that finds its job paused: the resume enqueues the chunk
        again. An account this worker knows no price of fails its recipients."""
        if self.spend is None:
            return 0
        reservation = await self.spend.reserve(account, parts)
        if reservation.answer == "reserved":
            return reservation.units
        self._unsent.append(request_id)
        if reservation.answer == "unpriced":
            reason = (
                f"account {account.name} has no price_per_part, which the job's max_cost "
                "needs: set it, restart the workers, then retry the job"
            )
            self.log.error("max_cost_unpriced", account=account.name)
            await self._end_unsent("failed", batch, reason, account, data)
            return None
        self._stopped = True
        if reservation.answer == "capped":
            self.log.warning("job_paused_max_cost", account=account.name, parts=parts)
        return None

    async def _refund(
        self, account: Account, reserved: int, unsent: list[Recipient], batch: list[Recipient]
    ) -> None:
        """Give back the reservation's share of recipients provably not sent."""
        if self.spend is not None and reserved and unsent:
            parts = sum(r.cost_parts for r in unsent)
            of_parts = sum(r.cost_parts for r in batch)
            await self.spend.give_back(refund_units(account, reserved, parts, of_parts))

    async def _end_unsent(
        self,
        status: str,
        batch: list[Recipient],
        error: str | Mapping[int, str],
        account: Account,
        data: ChunkData,
    ) -> None:
        """Commit recipients of a request that will not go as ``status``
        (never sent), with one error for all or each its own (by index)."""
        await self._commit(
            {
                r.index: simple(
                    status,
                    data.outcomes.get(r.index),
                    e164=r.e164,
                    segments=r.segments,
                    error=error if isinstance(error, str) else error[r.index],
                    account=self._on(account.name),
                    since=self._places[r.index].since if r.index in self._places else None,
                )
                for r in batch
            },
            account=account,
        )

    async def _release(self, batch: list[Recipient]) -> None:
        """Recipients that provably were not sent give their claims back."""
        if self.dedupe is not None and batch:
            await self.dedupe.release(batch)

    async def _move_on(
        self, account: Account, batch: list[Recipient], data: ChunkData, wait_s: float
    ) -> float | None:
        """A request its account cannot take now (circuit open, daily cap
        reached): its recipients that have another account move there
        (pending, no attempt used; the next pass sends them at once); the
        others wait ``wait_s``."""
        moved = {
            r.index: simple(
                "pending",
                data.outcomes.get(r.index),
                e164=r.e164,
                segments=r.segments,
                account=place.next_account,
                since=data.outcomes[r.index].attempts if r.index in data.outcomes else 0,
                error=f"{account.name} could not send it now; moved on to {place.next_account}",
            )
            for r in batch
            if (place := self._places.get(r.index)) is not None and place.next_account
        }
        await self._commit(moved)
        if len(moved) < len(batch):
            self._hold(wait_s)
        return 0.0 if moved else None

    def _hold(self, wait_s: float) -> float:
        """Recipients held back ``wait_s`` (a window to open, a circuit to
        cool, a daily cap to reset at 00:00 UTC): the chunk is looked at again
        after the soonest such wait, or when the job's validity ends, to
        expire them. A wait past a Celery countdown parks the chunk
        (worker/tasks.py). Returns the wait used."""
        deadline = deadline_s(self.job)
        if deadline is not None:
            wait_s = min(wait_s, max(deadline - now_s(), 0.0) + 0.5)
        self._held_s = wait_s if self._held_s is None else min(self._held_s, wait_s)
        return wait_s

    async def _hold_back(self, account: Account, parts: int) -> tuple[bool, float | None]:
        """Whether the request waits for another pass, and the wait to
        return then; else (False, None) once its rate-limit capacity is taken."""
        if self._stopped or self._lost:
            return True, None
        now = time.monotonic()
        out_of_time = now - self._started > self.timing.pass_budget_s
        window_closed = self._window_until is not None and now >= self._window_until
        if out_of_time or window_closed:
            # The next pass goes on (or holds them back, for a window that
            # closed meanwhile).
            return True, 0.0
        if self._deferred is not None:
            # Another request of the pass found no capacity: the rest waits too.
            return True, None
        wait_s = await self._acquire(account, parts)
        if wait_s is Stopped.ACCOUNT:
            return True, 0.0  # the next pass goes on, and fails the rest
        if wait_s is not None:
            # Waiting for capacity is not a failure: no attempt is used.
            self._deferred = self._deferred or (wait_s, parts)
            return True, None
        return False, None

    async def _begin(self, request_id: str, sending: dict[str, Any]) -> bool | float | None:
        """Mark the request ``sending`` (``store.begin_request``): True, or,
        not to send it, None if the job stopped or the chunk is no longer
        this pass's, or the delay before the next pass tries it again if
        ``durable_sends`` could not have its state on a replica or on disk
        in time (it is dropped with the pass's unsent ones: its recipients
        stay pending, the next pass plans them again)."""
        if self._not_durable:  # an earlier request of the pass could not have it
            self._unsent.append(request_id)
            return NOT_DURABLE_RETRY_S
        begun = await self.store.begin_request(
            self.job.job_id, self.chunk_no, request_id, sending, self.lease_token, self.durable_ms
        )
        if begun == "not_durable":
            self.log.warning("request_not_durable", request=request_id)
            self._not_durable = True
            self._unsent.append(request_id)
            return NOT_DURABLE_RETRY_S
        if begun == "stopped":
            # Paused or cancelled meanwhile: whoever resumes enqueues the chunk again.
            self._unsent.append(request_id)
            self._stopped = True
            return None
        if begun != "begun":
            # The lease ran out, or someone else settled or dropped the
            # request: the chunk is another pass's now. Send nothing more.
            self.log.warning("request_not_begun", request=request_id, reason=begun)
            self._lost = True
            return None
        self._begun.add(request_id)
        return True

    async def _record(
        self,
        request_id: str,
        sending: dict[str, Any],
        sent: SendResult,
        outcomes: dict[int, StoredOutcome],
        started: float,
        account: Account,
    ) -> None:
        """Commit the request's outcomes and its end, even if the pass is
        cancelled meanwhile (``finish``)."""
        done = {
            "s": "done",
            "a": sending["a"],
            "st": sending["t"],
            "t": now_s(),
            "http": sent.http_status,
        }
        state = await finish(self._commit(outcomes, request_id, sending["k"], done, account))
        self.log.info(
            "provider_request",
            request=request_id,
            account=account.name,
            recipients=len(sending["i"]),
            attempt=sending["a"],
            http_status=sent.http_status,
            latency_ms=round((time.monotonic() - started) * 1e3),
            job_state=state,
        )
        if state == "fenced":
            self.log.warning("request_fenced", request=request_id)

    async def _heed(
        self, account: Account, sent: SendResult, outcomes: dict[int, StoredOutcome]
    ) -> None:
        """Slow the account down when the provider throttled it; stop it
        when the provider refused its credentials."""
        if sent.throttled:
            metrics.record_throttle(account)
            factor = await self.limiter.throttled(account.name, sent.retry_after_s)
            self.log.warning(
                "provider_throttled",
                account=account.name,
                retry_after_s=sent.retry_after_s,
                factor=factor,
            )
        if sent.bad_credentials:
            reason = _credentials_reason(account, outcomes)
            await self.store.block_account(account.name, reason)
            self.log.error("account_blocked", account=account.name, reason=reason)

    async def _post(
        self,
        session: aiohttp.ClientSession,
        request_id: str,
        adapter: Adapter,
        batch: list[Recipient],
    ) -> SendResult:
        """The adapter's send. An exception that escapes it (an answer it
        cannot read, a bug) is an answer nobody can read: the request may
        have been taken, as when a worker dies mid-request."""
        try:
            with metrics.in_flight(adapter.account):
                return await adapter.send(session, batch, self.context)
        except Exception as error:
            name = type(error).__name__
            self.log.exception("provider_request_raised", request=request_id, error=name)
            reason = f"the answer could not be read: {name}"
            return SendResult(all_of(batch, Verdict.UNCERTAIN, "unreadable", reason))


def _refused(
    batch: list[Recipient], sent: SendResult, outcomes: dict[int, StoredOutcome]
) -> list[Recipient]:
    """The recipients that ended ``failed`` on answers that mean the provider
    did not take them (refused, or "not sent" until attempts ran out)."""
    return [
        r
        for r, result in zip(batch, sent.results, strict=True)
        if result.verdict in (Verdict.FAILED, Verdict.RETRY)
        and outcomes[r.index].status == "failed"
    ]


def _not_taken(batch: list[Recipient], sent: SendResult) -> list[Recipient]:
    """The recipients the provider said it did not take (refused, or "not
    sent, try again"): they cost nothing (a retry reserves its cost again)."""
    return [
        r
        for r, result in zip(batch, sent.results, strict=True)
        if result.verdict in (Verdict.FAILED, Verdict.RETRY)
    ]


def not_sent(sent: SendResult) -> bool:
    """The request failed as "not sent" (could not connect, HTTP 429 or
    5xx): what counts towards the account's circuit."""
    if not sent.results or any(r.verdict is not Verdict.RETRY for r in sent.results):
        return False
    status = sent.http_status
    return status is None or status == 429 or status >= 500


def _credentials_reason(account: Account, outcomes: dict[int, StoredOutcome]) -> str:
    first = next(iter(outcomes.values()), None)
    said = f" ({first.error_code}: {first.error})" if first and first.error else ""
    return (
        f"account {account.name} stopped: the provider refused its credentials{said}; "
        "fix them, restart the workers, then retry the job"
    )


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception a task group collected (groups nest)."""
    first = group.exceptions[0]
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first
