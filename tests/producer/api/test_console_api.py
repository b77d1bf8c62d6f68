"""The JSON behind the console (docs/INTERFACE.md, "The console"): a job's
timeline and errors, the accounts' live figures, and the console's files;
a real aiohttp server on the session's Valkey, outcomes written by the
workers' commit script."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import monitoring
from producer.api.app import create_app
from producer.core import keys
from producer.core.scripts import script
from producer.core.store import StoredOutcome, encode_outcome
from producer.monitoring import ERROR_BLOCKS_PER_CALL
from tests.producer.api.test_app import TOKEN, ApiServer, job, submit
from worker.store import outcome_records

T0 = 1_764_000_000  # a whole second, for buckets at known starts


@pytest.fixture
def api(redis_url: str, config_file: Path) -> Iterator[ApiServer]:
    server = ApiServer(create_app(TOKEN, redis_url))
    try:
        yield server
    finally:
        server.stop()


def commit(
    client: redis.Redis, job_id: str, outcomes: dict[int, StoredOutcome], now_s: float
) -> None:
    """Commit outcomes as a worker does at ``now_s``, timeline included."""
    block_no = next(iter(outcomes)) // keys.BLOCK_SIZE
    script("commit_outcomes")(
        keys=[
            keys.job(job_id),
            keys.outcomes(job_id, block_no),
            keys.requests(job_id, block_no),
            keys.FINISHED,
            keys.ACTIVE,
            keys.timeline(job_id),
        ],
        args=[
            "",
            "",
            "{}",
            repr(now_s),
            job_id,
            outcome_records(outcomes),
            "",
            keys.TIMELINE_BUCKETS,
        ],
        client=client,
    )


def accepted(indices: range) -> dict[int, StoredOutcome]:
    return {i: StoredOutcome("accepted", attempts=1) for i in indices}


def test_the_timeline_counts_recipients_accepted_per_second(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    job_id = submit(api, job(10))
    assert api("GET", f"/v1/jobs/{job_id}/timeline").json() == []
    commit(redis_client, job_id, accepted(range(0, 3)), T0 + 0.2)
    commit(redis_client, job_id, accepted(range(3, 5)), T0 + 0.9)
    commit(redis_client, job_id, {5: StoredOutcome("failed", error_code="500")}, T0 + 1.5)
    commit(redis_client, job_id, accepted(range(6, 10)), T0 + 3.1)
    commit(redis_client, job_id, accepted(range(6, 10)), T0 + 4.1)  # again: not newly accepted
    answer = api("GET", f"/v1/jobs/{job_id}/timeline")
    assert answer.status == 200
    assert answer.json() == [{"t": T0, "n": 5, "s": 1}, {"t": T0 + 3, "n": 4, "s": 1}]


def test_a_long_jobs_timeline_stays_bounded_in_coarser_buckets(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    seconds = 3 * keys.TIMELINE_BUCKETS + 7
    job_id = submit(api, job(seconds))
    for second in range(seconds):
        commit(redis_client, job_id, accepted(range(second, second + 1)), T0 + second)
    fields = redis_client.hlen(keys.timeline(job_id))
    assert fields <= keys.TIMELINE_BUCKETS + 1
    points = api("GET", f"/v1/jobs/{job_id}/timeline").json()
    width = points[0]["s"]
    assert width == 4 and {p["s"] for p in points} == {width}
    assert sum(p["n"] * width for p in points) == seconds  # every recipient still counted
    assert all(p["t"] % width == 0 for p in points)
    assert [p["t"] for p in points] == sorted(p["t"] for p in points)
    # Its size in Redis (docs/BENCHMARKS.md, "The console's timeline"): a listpack.
    assert redis_client.object("encoding", keys.timeline(job_id)) == b"listpack"
    assert int(redis_client.memory_usage(keys.timeline(job_id))) < 2048


def test_the_timeline_goes_with_the_job_at_retention(redis_client: redis.Redis) -> None:
    from worker.background.retention import job_data_keys

    assert keys.timeline("j1") in set(job_data_keys("j1", 10, 5))


def test_errors_are_grouped_by_code_with_counts_most_frequent_first(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    total = (ERROR_BLOCKS_PER_CALL + 1) * keys.BLOCK_SIZE + 5  # two calls of the script
    job_id = submit(api, job(total))
    commit(redis_client, job_id, accepted(range(0, 10)), T0)
    failed = StoredOutcome("failed", error_code="1006", error="invalid number", attempts=1)
    unknown = StoredOutcome("unknown", error_code="504", error="timed out", attempts=5)
    commit(redis_client, job_id, dict.fromkeys(range(10, 13), failed), T0)
    last_block = (total - 1) // keys.BLOCK_SIZE * keys.BLOCK_SIZE
    commit(redis_client, job_id, dict.fromkeys(range(last_block, last_block + 2), failed), T0)
    commit(redis_client, job_id, {20: unknown}, T0)
    commit(redis_client, job_id, {21: StoredOutcome("failed", error_code="504", error="5xx")}, T0)
    answer = api("GET", f"/v1/jobs/{job_id}/errors")
    assert answer.status == 200
    groups = answer.json()
    assert groups[0] == {
        "code": "1006",
        "error": "invalid number",
        "count": 5,
        "statuses": {"failed": 5},
    }
    assert groups[1]["code"] == "504" and groups[1]["count"] == 2
    assert groups[1]["statuses"] == {"unknown": 1, "failed": 1}
    assert len(groups) == 2
    assert api("GET", f"/v1/jobs/{submit(api, job(2))}/errors").json() == []


def test_unknown_jobs_are_404_for_timeline_and_errors(api: ApiServer) -> None:
    for path in ("timeline", "errors"):
        for job_id in ("no-such-job", "acc:m:0"):
            answer = api("GET", f"/v1/jobs/{job_id}/{path}")
            assert answer.status == 404, path
            assert "no such job" in answer.json()["error"]


def test_accounts_show_kind_limits_and_live_figures(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    seconds, _ = redis_client.time()
    limits = {"messages_per_second": 50, "batch_size": 100, "daily_max_parts": 5000}
    redis_client.hset(keys.LIMITS, "bulk", json.dumps(limits))
    redis_client.hset(keys.daily_parts("bulk"), mapping={"day": seconds // 86400, "parts": 120})
    redis_client.hset(keys.circuit("bulk"), mapping={"failures": 3, "open_until": seconds + 30})
    # The limiter's meter as rate_acquire/rate_throttled write it.
    redis_client.hset(
        keys.rate("bulk"),
        mapping={
            f"p{(seconds - 1) % 8}": f"{seconds - 1}:100",
            f"p{(seconds - 2) % 8}": f"{seconds - 2}:150",
            f"p{(seconds - 7) % 8}": f"{seconds - 7}:9999",  # out of the window
            f"q{(seconds - 10) % 64}": f"{seconds - 10}:4",
            f"q{(seconds - 50) % 64}": f"{seconds - 50}:2",
            f"q{(seconds - 61) % 64}": f"{seconds - 61}:7",  # over a minute ago
        },
    )
    answer = api("GET", "/v1/accounts")
    assert answer.status == 200
    (bulk,) = answer.json()["accounts"]
    assert bulk["account"] == "bulk" and bulk["kind"] == "sendbulk"
    assert bulk["limits"] == limits
    assert bulk["parts_today"] == 120 and bulk["circuit"] == "open" and bulk["failures"] == 3
    assert bulk["stopped"] is None
    assert bulk["throttled_last_minute"] == 6
    assert 250 / 6 <= bulk["parts_per_second"] <= 250 / 5


def test_accounts_before_any_worker_started_have_no_limits(api: ApiServer) -> None:
    (bulk,) = api("GET", "/v1/accounts").json()["accounts"]
    assert bulk["limits"] is None and bulk["parts_per_second"] == 0
    assert bulk["throttled_last_minute"] == 0 and bulk["circuit"] == "closed"


def _schema(document: dict[str, Any], path: str) -> dict[str, Any]:
    return dict(document["paths"][path]["get"]["responses"]["200"]["content"]["application/json"])


def test_the_openapi_document_describes_the_three_endpoints(api: ApiServer) -> None:
    document = api("GET", "/v1/openapi.json").json()
    schemas = document["components"]["schemas"]
    timeline = _schema(document, "/v1/jobs/{job_id}/timeline")["schema"]
    assert timeline["items"] == {"$ref": "#/components/schemas/TimelinePoint"}
    assert set(schemas["TimelinePoint"]["properties"]) == {"t", "n", "s"}
    assert set(schemas["ErrorGroup"]["properties"]) == {"code", "error", "count", "statuses"}
    account = schemas["AccountList"]["properties"]["accounts"]["items"]["properties"]
    assert {"kind", "limits", "parts_per_second", "throttled_last_minute"} <= set(account)
    for path in ("/v1/jobs/{job_id}/timeline", "/v1/jobs/{job_id}/errors"):
        assert {"200", "401", "404"} <= set(document["paths"][path]["get"]["responses"])
    assert "401" in document["paths"]["/v1/accounts"]["get"]["responses"]


def test_the_console_is_served_without_a_token_and_loads_nothing_from_elsewhere(
    api: ApiServer,
) -> None:
    page = api("GET", "/", token=None)
    assert page.status == 200 and page.headers.get_content_type() == "text/html"
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    html = page.body.decode()
    assert "http://" not in html and "https://" not in html  # no CDN
    for name in ("console.js", "console.css"):
        asset = api("GET", f"/console/{name}", token=None)
        assert asset.status == 200 and asset.body
        assert f"/console/{name}" in html
    script_text = api("GET", "/console/console.js", token=None).body.decode()
    assert "sessionStorage.setItem" in script_text and "localStorage." not in script_text
    assert "document.cookie" not in script_text
    assert api("GET", "/console/../app.py", token=None).status == 404
    assert api("GET", "/console/app.py", token=None).status == 404


def test_the_console_files_are_in_the_package() -> None:
    from producer.api.console import CONSOLE_DIR, FILES

    assert {p.name for p in CONSOLE_DIR.iterdir()} == {"index.html", *FILES}
    assert isinstance(CONSOLE_DIR, Path)


def test_errors_are_counted_again_only_once_the_jobs_counters_change(
    api: ApiServer, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitoring, "RECOUNT_S_PER_BLOCK", 0.0)  # no wait between recounts
    job_id = submit(api, job(5))
    failed = StoredOutcome("failed", error_code="1006", error="invalid number", attempts=1)
    commit(redis_client, job_id, {0: failed}, T0)
    assert api("GET", f"/v1/jobs/{job_id}/errors").json()[0]["count"] == 1
    # An outcome written behind the counters' back: the counters say nothing changed.
    redis_client.hset(keys.outcomes(job_id, 0), "1", encode_outcome(failed))
    assert api("GET", f"/v1/jobs/{job_id}/errors").json()[0]["count"] == 1
    commit(redis_client, job_id, {2: failed}, T0)  # a counter moves: counted again
    assert api("GET", f"/v1/jobs/{job_id}/errors").json()[0]["count"] == 3
