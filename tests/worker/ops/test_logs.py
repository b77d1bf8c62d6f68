"""What an operator reads on stderr: JSON lines with context, never a number or a secret."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import pytest
import structlog

from worker.ops.logs import configure_logging, get_logger, mask_text

SECRET_KEYS = [
    "api_key", "apikey", "api_password", "password", "secret", "token", "authorization",
    "access_key_secret", "access_key_id", "partnerid", "x-authorization",
    "API_KEY", "Authorization", "X-Authorization", "partner_id", "gosms_api_key",
]  # fmt: skip
SECRET = "s3cr3t-Val"
Cap = pytest.CaptureFixture[str]


@pytest.fixture(autouse=True)
def _reset_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SMSBULK_LOG_LEVEL", raising=False)
    monkeypatch.delenv("SMSBULK_LOG_FORMAT", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = handlers
    root.setLevel(level)


def json_logs(capsys: Cap) -> Callable[[], str]:
    """Configure JSON logging; the returned function reads what reached stderr."""
    configure_logging(fmt="json")
    return lambda: capsys.readouterr().err


def records(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def _send(to: str) -> None:
    url = f"https://u:{SECRET}@x/send?apikey={SECRET}"
    raise ValueError(f"provider refused 0712345678 (to={to}) Authorization: Bearer {SECRET} {url}")


def test_phone_masked_in_message_kwargs_nested_and_positional(capsys: Cap) -> None:
    stderr = json_logs(capsys)
    log = get_logger()
    log.info(
        "sending to +40712345678",
        to="0712 345 678",
        batch={"recipients": [{"to": "0722-123-456"}, ("0733123456",)], "0755123456": 1},
        csv=PurePosixPath("/tmp/0766123456.csv"),  # not JSON-native: rendered as a masked repr
    )
    log.info("retry %s", "0744123456")
    first, second = records(err := stderr())
    assert first["event"] == "sending to +40*******78"
    assert first["to"] == "07******78"
    # Timestamps carry digits of their own (microseconds): leave them out.
    masked = re.sub(r'"timestamp": "[^"]*"', "", err)
    for digits in ("712345678", "345 678", "722", "123-456", "733123456", "744123456", "55123"):
        assert digits not in masked
    assert second["event"].startswith("retry 07")
    assert first["csv"] == "PurePosixPath('/tmp/07******56.csv')"


def test_exception_message_and_traceback_masked_and_redacted(capsys: Cap) -> None:
    stderr = json_logs(capsys)
    try:
        _send("+40722123456")
    except ValueError:
        get_logger().exception("chunk failed")
    (record,) = records(stderr())
    assert "Traceback" in record["exception"]
    assert "ValueError: provider refused" in record["exception"]
    assert "0712345678" not in record["exception"]  # the source line shown in the traceback too
    assert "722123456" not in json.dumps(record) and SECRET not in json.dumps(record)


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_credentials_redacted_at_top_level_and_nested(key: str, capsys: Cap) -> None:
    stderr = json_logs(capsys)
    get_logger().info(
        "request", **{key: SECRET, "headers": {key: SECRET}, "items": [{key: SECRET}]}
    )
    err = stderr()
    assert SECRET not in err
    (record,) = records(err)
    assert record[key] == "[redacted]"
    assert record["headers"] == {key: "[redacted]"}


def test_json_lines_carry_bound_context(capsys: Cap) -> None:
    stderr = json_logs(capsys)
    structlog.contextvars.bind_contextvars(job_id="campaign-20261122", chunk=3)
    log = get_logger(provider="ro")
    log.info("chunk sent", accepted=100)
    log.warning("throttled", retry_after_s=2)
    lines = stderr().splitlines()
    assert len(lines) == 2
    for line, level in zip(lines, ("info", "warning"), strict=True):
        record = json.loads(line)
        assert record["job_id"] == "campaign-20261122"  # identifiers are not masked
        assert (record["chunk"], record["provider"], record["level"]) == (3, "ro", level)
        assert record["logger"] == __name__
        assert datetime.fromisoformat(record["timestamp"]).utcoffset() == UTC.utcoffset(None)


def test_a_request_id_with_a_run_of_digits_is_not_masked(capsys: Cap) -> None:
    # Request ids are smsbulk's own (hex of a random UUID): one with seven
    # digits in a row read "8*****7ab11a49a2" in a worker's log.
    stderr = json_logs(capsys)
    get_logger().info("provider_request", request="8123456" + "7ab11a49a2")
    assert json.loads(stderr())["request"] == "81234567ab11a49a2"


def test_stdlib_records_from_celery_are_json_and_masked(capsys: Cap) -> None:
    stderr = json_logs(capsys)
    structlog.contextvars.bind_contextvars(job_id="j1")
    logging.getLogger("celery").warning("Task failed for 0712345678 after %s tries", 3)
    try:
        _send("0722123456")
    except ValueError:
        logging.getLogger("aiohttp.client").error("request to 0733123456 failed", exc_info=True)
    err = stderr()
    celery, aiohttp = records(err)
    assert celery["logger"] == "celery" and celery["level"] == "warning"
    assert celery["event"] == "Task failed for 07******78 after 3 tries"
    assert celery["job_id"] == "j1"
    assert "Traceback" in aiohttp["exception"]
    for digits in ("712345678", "722123456", "733123456"):
        assert digits not in err


def test_debug_level_is_masked_and_info_level_hides_debug(
    capsys: Cap,
) -> None:
    configure_logging(level="DEBUG", fmt="json")
    get_logger().debug("raw response", body='{"to": "40712345678", "status": "ok"}')
    logging.getLogger("aiohttp.client").debug("payload 0712345678")
    err = capsys.readouterr().err
    assert len(records(err)) == 2
    assert "712345678" not in err
    configure_logging(level="INFO", fmt="json")
    get_logger().debug("hidden")
    assert capsys.readouterr().err == ""


def test_env_overrides_arguments_and_console_is_masked(
    capsys: Cap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMSBULK_LOG_LEVEL", "debug")
    monkeypatch.setenv("SMSBULK_LOG_FORMAT", "console")
    configure_logging(level="ERROR", fmt="json")
    try:
        _send("0722123456")
    except ValueError:
        get_logger().debug("to 0712345678", api_key=SECRET, exc_info=True)
    err = capsys.readouterr().err
    assert "to 07******78" in err and "Traceback" in err
    assert not err.startswith("{")  # console, not JSON
    assert "\x1b[" not in err  # no colours when stderr is not a terminal
    for leaked in ("712345678", "722123456", SECRET):
        assert leaked not in err


@pytest.mark.parametrize("var", ["SMSBULK_LOG_LEVEL", "SMSBULK_LOG_FORMAT"])
def test_bad_env_value_names_the_variable(var: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(var, "LOUD")
    with pytest.raises(ValueError, match=var):
        configure_logging()


def test_idempotent_and_auto_is_json_when_not_a_tty(capsys: Cap) -> None:
    early = get_logger()  # obtained before configuration, as module-level loggers are
    for _ in range(3):
        configure_logging()
    early.info("once to 0712345678")
    logging.getLogger("celery").info("once")
    assert [r["event"] for r in records(capsys.readouterr().err)] == ["once to 07******78", "once"]


MASKED = [
    ("+40712345678", "+40*******78"),
    ("call 0712 345 678 now", "call 07******78 now"),
    ("0040712345678", "004********78"),
]
KEPT = ["task 3f2a1b4c-1234-5678-9abc-def012345678", "at 2026-11-22T04:14:45.123Z",
        "succeeded in 0.004532180999998s", "chunk 12 of 345, 123456 parts"]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), MASKED + [(kept, kept) for kept in KEPT])
def test_mask_text_masks_phones_but_not_ids_times_or_counts(text: str, expected: str) -> None:
    assert mask_text(text) == expected
