"""The job contract: what is refused whole, naming the field, and what is not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import JobExists, JobRefused, Producer
from producer.accounts import AccountInfo, KindInfo
from producer.core import keys
from producer.destinations import CallbackPolicy
from producer.validation import validate_job

# As the workers publish it from UspeedoAdapter.
USPEEDO = KindInfo(template=True, needs_sender=True)
ACCOUNTS = {
    "bulk": AccountInfo("bulk", "sendbulk"),
    "tpl": AccountInfo("tpl", "uspeedo", facts=USPEEDO),
    "tpl_sender": AccountInfo("tpl_sender", "uspeedo", sender="ACME", facts=USPEEDO),
}


def job(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"provider": "bulk", "text": "hi", "messages": [{"to": "0712345678"}]}
    base.update(overrides)
    return base


def refused_fields(raw: Any) -> list[str]:
    with pytest.raises(JobRefused) as info:
        validate_job(raw, ACCOUNTS)
    return [error["field"] for error in info.value.errors]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (job(provider="nope"), "provider"),
        (job(colour="red"), "colour"),
        (job(messages=[]), "messages"),
        (job(messages=[{"text": "x"}]), "messages[0].to"),
        (job(messages=[{"to": ""}]), "messages[0].to"),
        (job(messages=[{"to": 712345678}]), "messages[0].to"),
        (job(messages=[{"to": "0712345678"}, {"to": "1", "extra": 1}]), "messages[1].extra"),
        (
            job(text=None, messages=[{"to": "0712345678", "text": "a"}, {"to": "1"}]),
            "messages[1].text",
        ),
        (job(schedule_at="tomorrow"), "schedule_at"),
        (job(schedule_at="2030-01-01T10:00:00"), "schedule_at"),  # no zone
        (job(job_id="has space"), "job_id"),
        (job(job_id="x" * 65), "job_id"),
        (job(delivery_policy="twice"), "delivery_policy"),
        (job(priority="urgent"), "priority"),
        (job(provider="tpl", text=None, sender="S"), "template_id"),
        (job(provider="tpl", template_id="T"), "sender"),
        (job(send_window={"start": "9:00", "end": "20:00"}), "send_window.start"),
        (job(send_window={"start": "09:00", "end": "24:00"}), "send_window.end"),
        (job(send_window={"start": "09:00"}), "send_window.end"),
        (job(send_window={"start": "09:00", "end": "09:00"}), "send_window"),
        (
            job(send_window={"start": "09:00", "end": "20:00", "timezone": "Mars/Olympus"}),
            "send_window.timezone",
        ),
        (job(send_window={"start": "09:00", "end": "20:00", "tz": "UTC"}), "send_window.tz"),
    ],
)
def test_refused_whole_naming_the_field(raw: dict[str, Any], field: str) -> None:
    assert field in refused_fields(raw)


def test_refusal_never_echoes_input_values() -> None:
    with pytest.raises(JobRefused) as info:
        validate_job(job(messages=[{"to": 40712345678}]), ACCOUNTS)
    assert "40712345678" not in str(info.value)
    assert all("input" not in error for error in info.value.errors)


def test_accepted_jobs() -> None:
    assert validate_job(job(), ACCOUNTS).delivery_policy == "at_most_once"
    assert validate_job(job(text=None, messages=[{"to": "1", "text": "own"}]), ACCOUNTS)
    assert validate_job(job(provider="tpl_sender", text=None, template_id="T"), ACCOUNTS)
    soon = datetime.now(timezone(timedelta(hours=2))) + timedelta(days=3)
    parsed = validate_job(job(schedule_at=soon.isoformat()), ACCOUNTS)
    assert parsed.schedule_at is not None and parsed.schedule_at.utcoffset() is not None
    # Invalid numbers are not refused at submission: they become `rejected` outcomes.
    assert validate_job(job(messages=[{"to": "not-a-number"}]), ACCOUNTS)


def test_json_string_input_is_validated_too() -> None:
    assert "messages[0].to" in refused_fields('{"provider": "bulk", "text": "x", "messages": [{}]}')


def test_submit_stores_compactly_and_refuses_existing_id(
    redis_client: redis.Redis, redis_url: str, config_file: Path
) -> None:
    producer = Producer(redis_url)
    messages = [{"to": f"07{20000000 + i}", "ref": f"r{i}"} for i in range(2500)]
    job_id = producer.submit(job(job_id="job-1", messages=messages))
    assert job_id == "job-1"
    status = producer.status(job_id)
    assert (status.state, status.total, status.counts["pending"]) == ("queued", 2500, 2500)
    # Three message blocks, not 2500 keys; one small plan task on the queue.
    assert sorted(redis_client.keys(f"{keys.PREFIX}:job:job-1:m:*")) == [
        keys.block("job-1", n).encode() for n in range(3)
    ]
    assert redis_client.llen(keys.NORMAL_QUEUE) == 1
    assert len(redis_client.lindex(keys.NORMAL_QUEUE, 0) or b"") < 2000
    with pytest.raises(JobExists):
        producer.submit(job(job_id="job-1"))
    results = list(producer.results(job_id))
    assert [r.index for r in results] == list(range(2500))
    assert {r.status for r in results} == {"pending"}
    assert [r.to for r in producer.results(job_id, ref="r7")] == ["0720000007"]
    producer.close()


def test_refused_job_leaves_nothing_behind(
    redis_client: redis.Redis, redis_url: str, config_file: Path
) -> None:
    producer = Producer(redis_url)
    with pytest.raises(JobRefused):
        producer.submit(job(messages=[{"to": "0712345678"}, {"to": ""}]))
    assert redis_client.dbsize() == 0
    producer.close()


# --- Input limits (docs/INTERFACE.md) ------------------------------------------------------

LONE_SURROGATE = "\ud83d"  # half of an emoji, as a JavaScript client may cut it


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (job(validity_minutes=0), "validity_minutes"),
        (job(validity_minutes=43201), "validity_minutes"),
        (job(validity_minutes=10**400), "validity_minutes"),
        (job(schedule_at="2999-01-01T00:00:00+00:00"), "schedule_at"),
        (job(messages=[{"to": "0712345678", "ref": "r" * 257}]), "messages[0].ref"),
        (job(text=f"hi {LONE_SURROGATE}"), "text"),
        (job(sender=LONE_SURROGATE), "sender"),
        (job(provider="tpl_sender", text=None, template_id=LONE_SURROGATE), "template_id"),
        (job(messages=[{"to": "0712345678", "text": f"x{LONE_SURROGATE}"}]), "messages[0].text"),
        (job(messages=[{"to": "1"}, {"to": "1", "ref": LONE_SURROGATE}]), "messages[1].ref"),
        (job(messages=[{"to": "1", "params": ["a", LONE_SURROGATE]}]), "messages[0].params[1]"),
        (job(messages=[{"to": f"07{LONE_SURROGATE}"}]), "messages[0].to"),
        (job(callback_url=f"https://example.com/{LONE_SURROGATE}"), "callback_url"),
    ],
)
def test_input_limits_refuse_naming_the_field(raw: dict[str, Any], field: str) -> None:
    assert field in refused_fields(raw)


def test_a_lone_surrogate_in_json_text_is_refused_naming_its_message() -> None:
    raw = '{"provider": "bulk", "text": "hi", "messages": [{"to": "1", "ref": "\\ud83d"}]}'
    assert refused_fields(raw) == ["messages[0].ref"]
    assert refused_fields(raw.encode()) == ["messages[0].ref"]


def test_input_limits_accept_their_bounds() -> None:
    in_89_days = (datetime.now(UTC) + timedelta(days=89)).isoformat()
    accepted = validate_job(
        job(
            validity_minutes=43200,
            schedule_at=in_89_days,
            text="emoji 😀 whole",
            messages=[{"to": "0712345678", "ref": "r" * 256}],
        ),
        ACCOUNTS,
    )
    assert accepted.validity_minutes == 43200
    assert validate_job(job(validity_minutes=1), ACCOUNTS).validity_minutes == 1


STRICT = CallbackPolicy()
HTTP = CallbackPolicy(allow_http=True)
PRIVATE = CallbackPolicy(allow_private=True)


@pytest.mark.parametrize(
    ("url", "policy"),
    [
        ("http://127.0.0.1:9/x", STRICT),
        ("https://169.254.169.254/latest/meta-data/", STRICT),
        ("https://10.1.2.3/hook", STRICT),
        ("https://192.168.1.1/hook", STRICT),
        ("https://127.0.0.1/hook", STRICT),
        ("https://[::1]/hook", STRICT),
        ("https://[::ffff:127.0.0.1]/hook", STRICT),
        ("https://[fe80::1]/hook", STRICT),
        ("https://0.0.0.0/hook", STRICT),
        ("https://localhost:5555/api/task", STRICT),  # Flower's API
        ("https://127.1/hook", STRICT),  # shorthand forms of 127.0.0.1
        ("https://2130706433/hook", STRICT),
        ("https://0x7f.1/hook", STRICT),
        ("http://example.com/hook", STRICT),
        ("http://example.com/hook", HTTP),  # http only to a loopback address
        ("http://10.1.2.3/hook", HTTP),
        ("https://10.1.2.3/hook", HTTP),
        ("http://127.0.0.1:9/x", PRIVATE),  # http needs callback_allow_http
        ("ftp://example.com/x", PRIVATE),
        ("https:///no-host", STRICT),
        ("https://example.com:99999/x", STRICT),
        ("not a url", STRICT),
    ],
)
def test_callback_url_is_refused_at_submission(url: str, policy: CallbackPolicy) -> None:
    with pytest.raises(JobRefused) as info:
        validate_job(job(callback_url=url), ACCOUNTS, policy)
    assert [error["field"] for error in info.value.errors] == ["callback_url"]


@pytest.mark.parametrize(
    ("url", "policy"),
    [
        ("https://example.com/hook", STRICT),  # a name: its addresses are checked when sent
        ("https://93.184.216.34/hook", STRICT),
        ("http://127.0.0.1:9/x", HTTP),
        ("https://127.0.0.1/x", HTTP),
        ("http://[::1]:8080/x", HTTP),
        ("https://10.1.2.3/hook", PRIVATE),
        ("https://169.254.169.254/x", PRIVATE),
    ],
)
def test_callback_url_accepted_at_submission(url: str, policy: CallbackPolicy) -> None:
    assert validate_job(job(callback_url=url), ACCOUNTS, policy).callback_url == url


def test_producer_submit_follows_the_configs_callback_settings(
    redis_client: redis.Redis, redis_url: str, config_file: Path
) -> None:
    producer = Producer(redis_url)
    with pytest.raises(JobRefused):
        producer.submit(job(callback_url="http://127.0.0.1:9/x"))
    assert redis_client.dbsize() == 0
    config_file.write_text(config_file.read_text() + "\n[settings]\ncallback_allow_http = true\n")
    assert producer.submit(job(job_id="cb", callback_url="http://127.0.0.1:9/x")) == "cb"
    producer.close()
