"""A stored job's settings, typed, with the contract's defaults written once."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime

from producer.core.settings import JobSettings, priority_of, settings_of
from producer.job import DEFAULT_DELIVERY_POLICY, DEFAULT_PRIORITY, JobSpec


def test_the_contracts_defaults_are_the_records() -> None:
    spec = JobSpec(provider="bulk")
    assert spec.priority == DEFAULT_PRIORITY == "normal"
    assert spec.delivery_policy == DEFAULT_DELIVERY_POLICY == "at_most_once"
    record = JobSettings(provider="bulk")
    assert (record.priority, record.delivery_policy) == (spec.priority, spec.delivery_policy)


def test_the_record_holds_every_setting_of_the_contract_as_stored() -> None:
    """What producer/submission.py stores (the spec without its messages or
    id) reads back whole: no setting of the contract is left out of the record."""
    spec = JobSpec(
        provider="bulk",
        text="hi",
        sender="ACME",
        template_id="t1",
        schedule_at=datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC),
        validity_minutes=90,
        delivery_policy="at_least_once",
        priority="high",
        callback_url="https://example.com/done",
    )
    stored = spec.model_dump(mode="json", exclude={"job_id"})
    settings = settings_of(json.dumps(stored).encode())
    assert {f.name: getattr(settings, f.name) for f in fields(settings)} == stored
    assert settings.schedule_s == datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert not settings.at_most_once


def test_a_spec_stored_without_a_setting_takes_the_contracts_default() -> None:
    settings = settings_of(b'{"provider": "bulk", "text": "hi", "not_known_here": 1}')
    assert settings == JobSettings(provider="bulk", text="hi")
    assert settings.priority == "normal" and settings.at_most_once
    assert settings.schedule_s is None


def test_priority_of_a_raw_spec() -> None:
    assert priority_of(b'{"provider": "bulk", "priority": "high"}') == "high"
    assert priority_of('{"provider": "bulk", "priority": "normal"}') == "normal"
    assert priority_of(b'{"provider": "bulk"}') == DEFAULT_PRIORITY
    assert priority_of(None) == DEFAULT_PRIORITY  # the job is gone
