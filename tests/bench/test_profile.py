"""The benchmark's py-spy summary: folded stacks in, shares per function out."""

from __future__ import annotations

from bench import report, scenarios
from bench.measure import Result
from bench.profile import package_of, parse_frame, short_file, summarise

FOLDED = """\
process 10:"python -m worker.cli worker";main (worker/cli.py:3);send_chunk (worker/tasks.py:5);prepare (worker/pipeline/recipients.py:9);_valid (worker/pipeline/phone.py:150) 6
process 10:"python -m worker.cli worker";main (worker/cli.py:3);send_chunk (worker/tasks.py:5);dumps (json/__init__.py:231);iterencode (json/encoder.py:258) 3
process 11:"python -m worker.cli worker";main (worker/cli.py:3);WorkController.start (celery/worker/worker.py:271);select (selectors.py:468) 1
garbage line without a count
"""


def test_summarise_counts_own_inclusive_and_packages() -> None:
    profile = summarise(FOLDED)
    assert profile.samples == 10
    assert profile.own[0] == ("_valid (worker/pipeline/phone.py)", 60.0)
    assert dict(profile.own)["iterencode (json/encoder.py)"] == 30.0
    inclusive = dict(profile.inclusive)
    assert inclusive["send_chunk (worker/tasks.py)"] == 90.0
    assert inclusive["prepare (worker/pipeline/recipients.py)"] == 60.0
    # Only smsbulk's frames, and not the entry point every sample shares.
    assert "main (worker/cli.py)" not in inclusive
    assert not any(label.startswith("WorkController") for label in inclusive)
    assert dict(profile.packages) == {"worker": 60.0, "json": 30.0, "selectors": 10.0}


def test_summarise_of_nothing_is_empty() -> None:
    assert summarise("").samples == 0


def test_frames_and_files() -> None:
    assert parse_frame('process 1:"x"') is None
    assert parse_frame("f (celery/worker/worker.py:1)") == (
        "f (celery/worker/worker.py)",
        "celery/worker/worker.py",
    )
    assert short_file("/x/.venv/lib/python3.11/site-packages/redis/client.py") == "redis/client.py"
    assert short_file("/root/.pyenv/lib/python3.11/json/encoder.py") == "json/encoder.py"
    assert short_file("/work/main/worker/pipeline/phone.py") == "worker/pipeline/phone.py"
    assert short_file("celery/worker/worker.py") == "celery/worker/worker.py"
    assert package_of("json/encoder.py") == "json"
    assert package_of("selectors.py") == "selectors"


def test_the_report_shows_three_tables_of_a_scenarios_profile() -> None:
    result = Result(scenarios.quick_set()[0])
    assert report.profile_tables(result) == []  # run without --profile
    result.profile = summarise(FOLDED)
    tables = report.profile_tables(result)
    name = result.scenario.name
    assert [title for title, _, _ in tables] == [
        f"{name}: functions by own time (10 samples)",
        f"{name}: functions by inclusive time",
        f"{name}: own time by package",
    ]
    assert [head for _, head, _ in tables] == [
        ["function (file)", "own %"],
        ["function (file)", "inclusive %"],
        ["package", "own %"],
    ]
    assert tables[0][2][0] == ["_valid (worker/pipeline/phone.py)", "60.0"]
