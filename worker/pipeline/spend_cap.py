"""``max_cost``: a job's spend cap, reserved per provider request across
every worker and host (scripts cost_reserve.lua and cost_release.lua, on the
job hash: ``cost_spent``, ``cost_cap``; producer/core/store.py).

Just before a request begins (after the account's gate), its cost, parts x
the sending account's ``price_per_part`` in whole millionths rounded up
(producer/core/money.py), is added to what the job has reserved, unless
that would pass the cap: then nothing is reserved, the request is not sent,
and the same script pauses the job (``pause_reason: "max_cost"``). So what
the job's requests may have cost never passes its cap, however many
workers send it. A resume with a higher ``max_cost`` goes on.

A reservation is given back when the request provably sent nothing (it
never began, or the provider answered "not sent"), and the share of the
recipients the provider refused; never after an uncertain answer or an
acceptance. A job without ``max_cost`` costs no Redis call; one with it,
one EVALSHA per request (and one more for a request that gives back).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

import redis.asyncio as aioredis

from producer.core import keys
from producer.core.money import micros
from producer.core.scripts import async_script
from worker.providers.account import Account

Answer = Literal["reserved", "capped", "stopped", "unpriced"]


@dataclass(frozen=True, slots=True)
class Reservation:
    """What ``SpendCap.reserve`` did: ``reserved`` (``units`` millionths,
    the request may go) or why the request may not go: ``capped`` (the job
    is paused now), ``stopped`` (the job does not send), ``unpriced`` (the
    account has no ``price_per_part`` on this worker). Nothing reserved then."""

    answer: Answer
    units: int = 0


def cost_units(account: Account, parts: int) -> int | None:
    """What ``parts`` parts cost through the account, in millionths
    (rounded up); None if the account has no price."""
    if account.price_per_part is None:
        return None
    return micros(account.price_per_part * parts)


def refund_units(account: Account, reserved: int, parts: int, of_parts: int) -> int:
    """The share of a reservation of ``reserved`` millionths for ``of_parts``
    parts that ``parts`` of them give back: all of it for all of them, else
    their cost rounded down (never more than was reserved)."""
    if parts >= of_parts:
        return reserved
    if account.price_per_part is None or parts <= 0:
        return 0
    return min(reserved, micros(account.price_per_part * parts, round_up=False))


class SpendCap:
    """One job's cap (its ``max_cost``, a decimal string as submitted)."""

    def __init__(self, client: aioredis.Redis, job_id: str, max_cost: str) -> None:
        self.redis = client
        self.job_key = keys.job(job_id)
        self.submitted_units = micros(Decimal(max_cost), round_up=False)
        self._reserve = async_script("cost_reserve")
        self._give_back = async_script("cost_release")

    async def reserve(self, account: Account, parts: int) -> Reservation:
        """Reserve a request's cost, or pause the job if it would pass the cap."""
        units = cost_units(account, parts)
        if units is None:
            return Reservation("unpriced")
        answer = await self._reserve(
            keys=[self.job_key], args=[self.submitted_units, units], client=self.redis
        )
        said = answer.decode() if isinstance(answer, bytes) else str(answer)
        if said == "reserved":
            return Reservation("reserved", units)
        return Reservation("capped" if said == "capped" else "stopped")

    async def give_back(self, units: int) -> None:
        """A reservation (or its share) that provably paid for nothing sent."""
        if units > 0:
            await self._give_back(keys=[self.job_key], args=[units], client=self.redis)
