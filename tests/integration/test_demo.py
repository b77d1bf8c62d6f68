"""`smsbulk demo` end to end: real Valkey, sandbox, worker and Flower processes."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from producer.phone import InvalidNumber, parse_number
from worker.dev.demo import INVALID_NUMBERS, PIDS_FILE, RESULTS_CSV, demo_kinds, plan_jobs, run_demo


def _live(pid: int, *, group: bool) -> list[int]:
    """Processes (not zombies) with this pid, or in this process group (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        state, pgrp, this = fields[0], int(fields[2]), int(stat.parent.name)
        if state not in ("Z", "X") and (pgrp == pid if group else this == pid):
            found.append(this)
    return found


def test_demo_jobs_split_recipients_across_kinds_with_a_few_invalid_numbers() -> None:
    jobs = plan_jobs(2000, ["sendbulk", "gosms", "uspeedo"])
    assert [len(job["messages"]) for job in jobs] == [667, 667, 666]
    numbers = [m["to"] for job in jobs for m in job["messages"]]
    invalid = [n for n in numbers if n in INVALID_NUMBERS]
    assert 0 < len(invalid) < 10
    valid = [n for n in numbers if n not in INVALID_NUMBERS]
    assert len({parse_number(n, "RO").e164 for n in valid}) == len(valid)  # unique, all valid
    for number in INVALID_NUMBERS:
        with pytest.raises(InvalidNumber):
            parse_number(number, "RO")
    template = next(job for job in jobs if job["provider"] == "demo-uspeedo")
    assert template["template_id"] and all(len(m["params"]) == 3 for m in template["messages"])


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_demo_sends_every_recipient_writes_the_csv_and_stops_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    workdir = tmp_path / "work"

    assert run_demo(recipients=2000, workdir=workdir, keep_flower=True) == 0

    out = capsys.readouterr().out
    with (tmp_path / RESULTS_CSV).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2000
    expected = {
        (job["provider"], index, m["to"], m.get("ref", "")): (
            "rejected" if m["to"] in INVALID_NUMBERS else "accepted"
        )
        for job in plan_jobs(2000, demo_kinds())
        for index, m in enumerate(job["messages"])
    }
    got = {(r["provider"], int(r["index"]), r["to"], r["ref"]): r["status"] for r in rows}
    assert got == expected
    accepted = sum(status == "accepted" for status in got.values())
    assert f"results: {tmp_path / RESULTS_CSV} (2000 rows)" in out
    assert re.search(rf"sandbox saw: \d+ requests, {accepted} items, 0 duplicates", out)
    assert re.search(r"^Flower: http://127\.0\.0\.1:\d+", out, re.MULTILINE)

    pids = json.loads((workdir / PIDS_FILE).read_text())
    assert set(pids) == {"valkey", "sandbox", "demo-worker", "flower"}
    assert _live(pids.pop("valkey"), group=False) == []
    for name, pid in pids.items():  # each in its own process group, pool children included
        assert _live(pid, group=True) == [], name
