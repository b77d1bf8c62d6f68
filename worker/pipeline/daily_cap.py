"""PLACEHOLDER (the circuit helper's branch replaces this file)."""

from __future__ import annotations

import redis.asyncio as aioredis

from worker.providers.account import Account


class DailyCaps:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def take(self, account: Account, parts: int) -> float | None:
        return None

    async def give_back(self, account: Account, parts: int) -> None:
        return None

    async def over_s(self, account: Account) -> float | None:
        return None
