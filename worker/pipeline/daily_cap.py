"""``daily_max_parts``: the SMS parts an account may send in one UTC day,
across every job and worker, counted in Redis (scripts daily_take.lua and
daily_give_back.lua, one hash per account: ``producer.core.keys.daily_parts``).

A request takes its parts before it goes; one that would pass the cap takes
nothing and learns how long until the next UTC day (by the server's clock),
when the count starts again from zero. A request that provably sent nothing
gives its parts back. An account without a cap costs no Redis call.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from producer.core import keys
from producer.core.scripts import async_script
from worker.providers.account import Account

STATE_TTL_S = 2 * 86400  # a day's count outlives its day


class DailyCaps:
    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._take = async_script("daily_take")
        self._give_back = async_script("daily_give_back")

    async def take(self, account: Account, parts: int) -> float | None:
        """Reserve parts for today (UTC) through the account, across all jobs and workers.
        None: taken (or the account has no daily_max_parts: no Redis call at all).
        Else: over the cap — nothing taken; seconds until the next UTC day."""
        if account.daily_max_parts is None:
            return None
        taken, wait_us = await self._take(
            keys=[keys.daily_parts(account.name)],
            args=[account.daily_max_parts, parts, STATE_TTL_S],
            client=self.redis,
        )
        return None if int(taken) else int(wait_us) / 1e6

    async def over_s(self, account: Account) -> float | None:
        """None if the account can send a part today; else the seconds until
        the next UTC day (its cap is reached). Takes nothing."""
        if account.daily_max_parts is None:
            return None
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(keys.daily_parts(account.name), "day", "parts")
        pipe.time()
        (day, parts), (seconds, micros) = await pipe.execute()
        now = seconds + micros / 1e6
        today = int(now // 86400)
        if day is None or int(day) != today or int(parts or 0) < account.daily_max_parts:
            return None
        return float((today + 1) * 86400 - now)

    async def give_back(self, account: Account, parts: int) -> None:
        """A request that provably sent nothing: its parts count no more (today's)."""
        if account.daily_max_parts is None or parts <= 0:
            return
        await self._give_back(
            keys=[keys.daily_parts(account.name)], args=[parts], client=self.redis
        )
