"""`smsbulk resume JOB --max-cost X` and the status's ``spent`` and
``pause_reason`` on the command line (no worker)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from tests.conftest import FAST, sandbox_account
from tests.producer.test_control import mark_running
from tests.producer.test_job import job
from tests.producer.test_max_cost import reserve
from worker.cli import main


@pytest.fixture
def priced_config(config_file: Path) -> Path:
    config_file.write_text(
        sandbox_account("bulk", "http://127.0.0.1:9", **FAST, price_per_part=0.05, currency="EUR")
    )
    return config_file


def test_resume_with_max_cost_raises_the_cap_of_a_paused_job(
    redis_url: str,
    priced_config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = redis.Redis.from_url(redis_url)
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job(max_cost="0.10")))
    base = ["--redis-url", redis_url]
    assert main([*base, "submit", str(path)]) == 0
    job_id = capsys.readouterr().out.strip()
    mark_running(client, job_id)
    reserve(client, job_id, 100_000)
    assert reserve(client, job_id, 1) == "capped"
    assert main([*base, "status", job_id]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["state"], status["pause_reason"], status["spent"]) == (
        "paused",
        "max_cost",
        "0.1",
    )

    assert main([*base, "resume", job_id, "--max-cost", "0.05"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "invalid input: max_cost:" in captured.err and "(0.1)" in captured.err

    assert main([*base, "resume", job_id, "--max-cost", "0.50"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["state"], status["max_cost"], status["pause_reason"]) == ("queued", "0.5", None)


def test_submit_refuses_max_cost_on_an_unpriced_account_exit_2(
    redis_url: str, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job(max_cost="1")))
    assert main(["--redis-url", redis_url, "submit", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "max_cost: account bulk has no price_per_part" in captured.err
    assert redis.Redis.from_url(redis_url).keys("*") == []
