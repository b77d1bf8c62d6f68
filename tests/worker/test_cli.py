"""The `smsbulk` command's stdout and exit codes (docs/INTERFACE.md)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from producer import Producer
from producer.core import keys
from producer.job import job_schema
from tests.conftest import sandbox_account
from tests.paths import ROOT
from worker.cli import main


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SMSBULK_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_schema_is_the_checked_in_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == job_schema()
    assert json.loads((ROOT / "docs" / "job.schema.json").read_text()) == printed, (
        "docs/job.schema.json is stale: run `smsbulk schema > docs/job.schema.json`"
    )


def test_malformed_job_exits_2_naming_the_field_and_queues_nothing(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    job = {"provider": "bulk", "text": "hi", "messages": [{"to": "0712345678"}, {"to": ""}]}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    assert main(["--redis-url", redis_url, "submit", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "messages[1].to" in captured.err
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('"text": "hi \\ud83d", "messages": [{"to": "0712345678"}]', "text"),
        ('"text": "hi", "messages": [{"to": "0712345678", "ref": "\\ud83d"}]', "messages[0].ref"),
        ('"text": "hi", "validity_minutes": 1' + "0" * 400 + ', "messages": [{"to": "1"}]',
         "validity_minutes"),
        ('"text": "hi", "messages": [{"to": "1", "\\ud83d": 1}]', "messages[0]"),
    ],
)  # fmt: skip
def test_input_limits_exit_2_naming_the_field_and_queue_nothing(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
    raw: str,
    field: str,
) -> None:
    path = tmp_path / "job.json"
    path.write_text('{"provider": "bulk", ' + raw + "}")
    assert main(["--redis-url", redis_url, "submit", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{field}: " in captured.err
    assert redis_client.dbsize() == 0


def test_not_json_exits_2(
    tmp_path: Path, redis_url: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "job.json"
    path.write_text("{not json")
    assert main(["--redis-url", redis_url, "submit", str(path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_submit_prints_the_job_id_alone_then_status_and_results(
    tmp_path: Path, redis_url: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "job.json"
    path.write_text(
        json.dumps(
            {
                "job_id": "cli-1",
                "provider": "bulk",
                "text": "hi",
                "messages": [{"to": "0712345678", "ref": "a"}],
            }
        )
    )
    assert main(["--redis-url", redis_url, "submit", str(path)]) == 0
    assert capsys.readouterr().out == "cli-1\n"
    assert main(["--redis-url", redis_url, "submit", str(path)]) == 1
    assert "job exists" in capsys.readouterr().err
    assert main(["--redis-url", redis_url, "status", "cli-1"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["state"], status["total"], status["counts"]["pending"]) == ("queued", 1, 1)
    assert main(["--redis-url", redis_url, "results", "cli-1", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("job_id,index,to,e164,ref,status")
    assert lines[1].startswith("cli-1,0,0712345678,,a,pending")
    assert main(["--redis-url", redis_url, "jobs"]) == 0
    assert json.loads(capsys.readouterr().out)["job_id"] == "cli-1"


def test_results_csv_quotes_formula_cells_but_not_phone_numbers(
    redis_url: str, producer: Producer, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = ['=HYPERLINK("http://x")', "@SUM(1+1)", "-2+3", "\tx", "\rx", "+40712345678"]
    messages = [{"to": "+40712345678", "ref": ref} for ref in refs]
    job_id = producer.submit({"provider": "bulk", "text": "hi", "messages": messages})
    assert main(["--redis-url", redis_url, "results", job_id, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out, newline="")))
    assert [row["ref"] for row in rows] == [
        "'=HYPERLINK(\"http://x\")", "'@SUM(1+1)", "'-2+3", "'\tx", "'\rx", "+40712345678"
    ]  # fmt: skip
    assert {row["to"] for row in rows} == {"+40712345678"}
    assert main(["--redis-url", redis_url, "results", job_id]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["ref"] for line in lines] == refs


def test_send_builds_a_job_from_a_csv(
    tmp_path: Path, redis_url: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = tmp_path / "to.csv"
    csv_path.write_text("to,ref,text\n0712345678,r1,\n0722123456,r2,own text\n")
    assert (
        main(
            [
                "--redis-url",
                redis_url,
                "send",
                "--provider",
                "bulk",
                "--csv",
                str(csv_path),
                "--text",
                "default",
            ]
        )
        == 0
    )
    job_id = capsys.readouterr().out.strip()
    assert main(["--redis-url", redis_url, "results", job_id, "--ref", "r2"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["to"], record["ref"], record["index"]) == ("0722123456", "r2", 1)


def test_unknown_job_exits_1(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--redis-url", redis_url, "status", "nope"]) == 1
    assert "no such job" in capsys.readouterr().err
    assert main(["--redis-url", redis_url, "wait", "nope", "--timeout", "1"]) == 1


@pytest.mark.parametrize(
    "command", [["status"], ["wait", "--timeout", "1"], ["results"], ["cancel"], ["pause"],
                ["resume"], ["retry"]],
)  # fmt: skip
def test_a_job_id_not_of_the_job_id_form_is_no_such_job(
    redis_url: str,
    redis_client: redis.Redis,
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    assert main(["--redis-url", redis_url, "send", "--provider", "bulk", "--to", "0712345678",
                 "--text", "hi"]) == 0  # fmt: skip
    job_id = capsys.readouterr().out.strip()
    before = {key: redis_client.type(key) for key in redis_client.keys("*")}
    verb, *options = command
    assert main(["--redis-url", redis_url, verb, f"{job_id}:m:0", *options]) == 1
    assert "no such job" in capsys.readouterr().err
    assert {key: redis_client.type(key) for key in redis_client.keys("*")} == before


def test_worker_refuses_to_start_without_config() -> None:
    result = run("worker")
    assert result.returncode == 2
    assert "SMSBULK_CONFIG" in result.stderr


def test_accounts_shows_each_accounts_circuit_failures_parts_today_and_stop(
    redis_url: str, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(redis_url)
    seconds, _ = client.time()
    client.hset(keys.circuit("bulk"), mapping={"failures": 3, "open_until": seconds + 30})
    client.hset(keys.daily_parts("bulk"), mapping={"day": seconds // 86400, "parts": 1200})
    config_file.write_text(config_file.read_text() + sandbox_account("bad", "http://127.0.0.1:9"))
    client.set(keys.account_block("bad"), "account bad stopped: bad credentials")
    assert main(["--redis-url", redis_url, "accounts"]) == 0
    shown = {
        line["account"]: line for line in map(json.loads, capsys.readouterr().out.splitlines())
    }
    assert shown["bulk"] == {
        "kind": "sendbulk",
        "account": "bulk",
        "circuit": "open",
        "failures": 3,
        "parts_today": 1200,
        "stopped": None,
        "parts_per_second": 0,
        "throttled_last_minute": 0,
        "limits": None,  # no worker has published them
    }
    assert shown["bad"]["circuit"] == "closed" and shown["bad"]["parts_today"] == 0
    assert shown["bad"]["stopped"] == "account bad stopped: bad credentials"
