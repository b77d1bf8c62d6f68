"""The opt-out list: E.164 numbers smsbulk never sends to.

One Redis set (``keys.OPTOUT``) shared by every worker and host. The CLI
(``smsbulk optout``) and the HTTP API (``/v1/optouts``, ``/v1/inbound``) write
it through these functions; the workers check it once per chunk pass
(worker/pipeline/optout.py), so a number added mid-job is honoured by every
recipient not yet sent.

Numbers are stored in E.164 as the workers write a recipient's number
(``+`` country code, national significant number), so a listed number
matches however the job wrote it.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from typing import cast

import redis

from producer.core import keys
from producer.errors import SmsbulkError
from producer.phone import ALLOWED, parse_number
from producer.phone import SUPPORTED_REGIONS as SUPPORTED_REGIONS  # for the API's region check
from producer.phone import InvalidNumber as InvalidNumber  # what to_e164 raises

REASON = "opted out"  # the `error` of a recipient rejected for it
# A reply whose first word is one of these (any case) opts its sender out.
STOP_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
# A number written internationally is read alike in every region.
_ANY_REGION = "US"


class NeedsRegion(InvalidNumber):
    """A national number given without a region to read it in."""


class UnknownRegion(SmsbulkError, ValueError):
    """A region that is not an ISO 3166 code phonenumbers knows."""


def to_e164(raw: str, region: str | None) -> str:
    """``raw`` in E.164, read as the workers read a recipient's number
    (``producer.phone``): ``+`` and ``00`` forms are international; national
    forms (and bare country codes, ``40712345678``) need ``region``.

    Raises NeedsRegion, InvalidNumber, or UnknownRegion.
    """
    if region is not None and region not in SUPPORTED_REGIONS:
        raise UnknownRegion(f"unknown region {region!r}: use an ISO 3166 code such as RO")
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    international = text.startswith("+")
    if region is None and not international and text and ALLOWED.fullmatch(text):
        raise NeedsRegion("a national number needs a region (or write it with + or 00)")
    return parse_number(text, region or _ANY_REGION).e164


def is_e164(text: str) -> bool:
    """``text`` is already a valid number written exactly in E.164."""
    try:
        return text.startswith("+") and to_e164(text, None) == text
    except InvalidNumber:
        return False


def stop_keyword(text: str) -> str | None:
    """The STOP keyword that opens a reply (upper case), or None.

    The first word counts, whatever its case and the punctuation around it:
    "stop", "Stop.", "STOP please" do; "stopped", "please stop" do not.
    """
    words = text.split(maxsplit=1)
    if not words:
        return None
    word = words[0].strip(string.punctuation).upper()
    return word if word in STOP_KEYWORDS else None


def add(client: redis.Redis, numbers: Iterable[str]) -> int:
    """Add E.164 numbers; the count newly listed."""
    values = list(numbers)
    return int(client.sadd(keys.OPTOUT, *values)) if values else 0


def remove(client: redis.Redis, numbers: Iterable[str]) -> int:
    """Remove E.164 numbers; the count that were listed."""
    values = list(numbers)
    return int(client.srem(keys.OPTOUT, *values)) if values else 0


def listed(client: redis.Redis) -> list[str]:
    """Every listed number, sorted."""
    members = cast(set[bytes], client.smembers(keys.OPTOUT))
    return sorted(member.decode() for member in members)
