"""PLACEHOLDER (the circuit helper's branch replaces this file)."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from worker.providers.account import Account


@dataclass(frozen=True, slots=True)
class Gate:
    send: bool
    probe: bool
    wait_s: float


class Circuits:
    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def gate(self, account: Account) -> Gate:
        return Gate(True, False, 0.0)

    async def record(self, account: Account, *, failed: bool, probe: bool) -> bool:
        return False

    async def open_for_s(self, account: Account) -> float | None:
        return None
