"""The opt-out list: E.164 numbers smsbulk never sends to.

Checked by the workers at send time, once per chunk (one SMISMEMBER), so a
number added mid-job is honoured by every chunk not yet sent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import redis
import redis.asyncio as aioredis

from producer.core import keys
from worker.pipeline.phone import InvalidNumber, parse_number

REASON = "opted out"


def to_e164(raw: str, region: str | None) -> str:
    """``+`` and ``00`` forms are international; national forms need a region."""
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    if not text.startswith("+") and region is None:
        raise InvalidNumber("a national number needs --region (or write it with + or 00)")
    # With a leading +, the region is not used: any known one will do.
    return parse_number(text, region or "GB").e164


def add(client: redis.Redis, numbers: Iterable[str]) -> int:
    values = list(numbers)
    return int(client.sadd(keys.OPTOUT, *values)) if values else 0


def remove(client: redis.Redis, numbers: Iterable[str]) -> int:
    values = list(numbers)
    return int(client.srem(keys.OPTOUT, *values)) if values else 0


def listed(client: redis.Redis) -> list[str]:
    members = cast(set[bytes], client.smembers(keys.OPTOUT))
    return sorted(member.decode() for member in members)


async def opted_out(client: aioredis.Redis, numbers: list[str]) -> set[str]:
    if not numbers:
        return set()
    flags = await client.smismember(keys.OPTOUT, numbers)
    return {number for number, flag in zip(numbers, flags, strict=True) if flag}
