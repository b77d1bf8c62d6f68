"""Building accounts and recipients for adapter tests."""

from __future__ import annotations

from typing import Any

from worker.config import parse_account
from worker.providers.base import JobContext, Recipient


def account(kind: str, **table: Any):  # type: ignore[no-untyped-def]
    base: dict[str, Any] = {
        "kind": kind,
        "base_url": "https://provider.example",
        "default_region": "RO",
    }
    base.update(table)
    return parse_account(kind, base)


def recipient(index: int, address: str, text: str | None = "hello", **kw: Any) -> Recipient:
    fields: dict[str, Any] = {
        "e164": "+" + address.lstrip("0"),
        "params": None,
        "sender": None,
        "segments": 1,
    }
    fields.update(kw)
    return Recipient(index=index, address=address, text=text, **fields)


CONTEXT = JobContext(job_id="job", template_id=None, schedule_at=None, validity_minutes=None)
