"""``dedupe_minutes``: duplicate suppression across jobs and workers.

A recipient of a job with ``dedupe_minutes`` is claimed just before its
request goes: one Redis key per number and content (a hash of the text as
sent; for a template, of the template id and params), expiring with the
window (scripts dedupe_claim.lua and dedupe_release.lua). A recipient whose
key another job's (or another recipient's) send holds within the window is
``rejected``, naming that send. The claim's value names the job and the
recipient's index, so a later pass of the same recipient (a retry, a
failover) finds its own claim and goes on. A recipient that provably was
not sent gives its claim back (its request sent nothing or never began, or
the provider refused it); after an uncertain answer or an acceptance it
never does. A job without ``dedupe_minutes`` costs no Redis call;
one with it, one EVALSHA per request.
"""

from __future__ import annotations

import hashlib
import json

import redis.asyncio as aioredis

from producer.core import keys
from producer.core.scripts import async_script
from worker.providers.base import Recipient


def content_hash(recipient: Recipient, template_id: str | None) -> str:
    """What a recipient is sent, as 16 hex digits (blake2b, 8 bytes): its
    text as sent, or (a template send: no text counted) its template and params."""
    if recipient.segments is not None:
        what = "t\0" + (recipient.text or "")
    else:
        what = "p\0" + json.dumps([template_id, recipient.params], ensure_ascii=False)
    return hashlib.blake2b(what.encode(), digest_size=8).hexdigest()


def reason(minutes: int, holder: str) -> str:
    """The rejection of a duplicate, naming the send it duplicates
    (``holder``: the claim's "job index ms")."""
    job_id, index, *_ = [*holder.split(" "), "", ""]
    return f"duplicate of an earlier send within {minutes} minutes (job {job_id}, message {index})"


class Dedupe:
    """One job's claims (its ``dedupe_minutes``)."""

    def __init__(
        self, client: aioredis.Redis, job_id: str, minutes: int, template_id: str | None
    ) -> None:
        self.redis = client
        self.job_id = job_id
        self.minutes = minutes
        self.template_id = template_id
        self._claim = async_script("dedupe_claim")
        self._release = async_script("dedupe_release")

    def _keys(self, batch: list[Recipient]) -> list[str]:
        return [keys.dedupe(r.e164, content_hash(r, self.template_id)) for r in batch]

    async def claim(self, batch: list[Recipient]) -> dict[int, str]:
        """Claim every recipient of a request (one script): the duplicates,
        index → rejection reason; the others are claimed (or were already theirs)."""
        if not batch:
            return {}
        answers = await self._claim(
            keys=self._keys(batch),
            args=[self.minutes * 60_000, self.job_id, *(r.index for r in batch)],
            client=self.redis,
        )
        return {
            r.index: reason(self.minutes, held.decode() if isinstance(held, bytes) else held)
            for r, held in zip(batch, answers, strict=True)
            if held
        }

    async def release(self, batch: list[Recipient]) -> None:
        """Give back the claims of recipients that provably were not sent."""
        if batch:
            await self._release(
                keys=self._keys(batch),
                args=[self.job_id, *(r.index for r in batch)],
                client=self.redis,
            )
