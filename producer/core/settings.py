"""A job's settings as stored (the job hash's ``spec``), read as a typed record.

``producer.submission`` stores the job's ``JobSpec`` without its messages or
id, as JSON; every reader (the workers, the client's control calls) reads it
back here, so each setting's default is the contract's (``producer.job``)
and written once. Reading is lenient, as a stored job outlives the code
that wrote it: a setting a job was stored without takes its default, and a
setting this code does not know is ignored. ``schedule_at`` stays the ISO
8601 string it was stored as (adapters send it on; ``schedule_s`` is it in
seconds).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import redis

from producer.core import keys
from producer.job import (
    DEFAULT_DELIVERY_POLICY,
    DEFAULT_PRIORITY,
    DeliveryPolicy,
    Priority,
    SendWindow,
)


@dataclass(frozen=True, slots=True)
class JobSettings:
    """Every setting of a stored job the workers act on."""

    provider: str
    text: str | None = None
    sender: str | None = None
    template_id: str | None = None
    schedule_at: str | None = None  # ISO 8601, as submitted
    validity_minutes: int | None = None
    delivery_policy: DeliveryPolicy = DEFAULT_DELIVERY_POLICY
    priority: Priority = DEFAULT_PRIORITY
    callback_url: str | None = None
    transliterate: bool = False
    dedupe_minutes: int | None = None
    send_window: SendWindow | None = None
    max_cost: str | None = None  # a decimal string, as submitted (a resume may raise it: cost_cap)

    @property
    def at_most_once(self) -> bool:
        return self.delivery_policy == "at_most_once"

    @property
    def schedule_s(self) -> float | None:
        """``schedule_at`` as epoch seconds; None without one."""
        return datetime.fromisoformat(self.schedule_at).timestamp() if self.schedule_at else None


def settings_of(raw_spec: bytes | str) -> JobSettings:
    """The settings of a stored ``spec`` (JSON)."""
    spec: dict[str, Any] = json.loads(raw_spec)
    return JobSettings(
        provider=spec["provider"],
        text=spec.get("text"),
        sender=spec.get("sender"),
        template_id=spec.get("template_id"),
        schedule_at=spec.get("schedule_at"),
        validity_minutes=spec.get("validity_minutes"),
        delivery_policy=spec.get("delivery_policy") or DEFAULT_DELIVERY_POLICY,
        priority=spec.get("priority") or DEFAULT_PRIORITY,
        callback_url=spec.get("callback_url"),
        transliterate=bool(spec.get("transliterate")),
        dedupe_minutes=spec.get("dedupe_minutes"),
        send_window=SendWindow.model_validate(spec["send_window"])
        if spec.get("send_window")
        else None,
        max_cost=spec.get("max_cost"),
    )


def priority_of(raw_spec: bytes | str | None) -> Priority:
    """The priority of a stored ``spec`` (JSON), for a reader that needs
    only it; the default priority without a spec (a job gone meanwhile)."""
    if raw_spec is None:
        return DEFAULT_PRIORITY
    return cast(Priority, json.loads(raw_spec).get("priority") or DEFAULT_PRIORITY)


def job_settings(client: redis.Redis, job_id: str) -> JobSettings | None:
    """The stored job's settings; None if there is no such job."""
    raw = cast(bytes | None, client.hget(keys.job(job_id), "spec"))
    return None if raw is None else settings_of(raw)
