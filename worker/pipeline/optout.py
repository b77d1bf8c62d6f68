"""The pass's check of the opt-out list (stored and normalised by
producer/optouts.py, shared with the CLI and the HTTP API).

Checked by the workers at send time, once per chunk pass (one SMISMEMBER),
so a number added mid-job is honoured by every chunk not yet sent.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from producer.core import keys
from producer.optouts import REASON

__all__ = ["REASON", "opted_out"]


async def opted_out(client: aioredis.Redis, numbers: list[str]) -> set[str]:
    if not numbers:
        return set()
    flags = await client.smismember(keys.OPTOUT, numbers)
    return {number for number, flag in zip(numbers, flags, strict=True) if flag}
