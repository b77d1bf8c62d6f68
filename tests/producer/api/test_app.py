"""The HTTP ingest API over real HTTP (docs/INTERFACE.md, "Enqueueing"): a real
aiohttp server on 127.0.0.1 against the session's Valkey, no worker."""

from __future__ import annotations

import asyncio
import csv
import http.client
import io
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, get_args

import pytest
import redis
import structlog
from aiohttp import web

from producer import Producer
from producer.api.app import (
    STATE,
    RetryRequest,
    RetryStatus,
    create_app,
    max_body_bytes_from_config,
)
from producer.control import RETRYABLE_STATUSES
from producer.core import keys
from producer.core.store import StoredOutcome, block_of, encode_outcome, now_s
from producer.errors import ConfigError
from producer.job import job_schema
from producer.results import BATCH_RECORDS, write_results
from tests.paths import ROOT
from worker.dev.launcher import Process, free_port, port_open, smsbulk_argv, wait_until

TOKEN = "t0ken-for-tests-at-least-32-characters"  # smsbulk api refuses shorter ones
NUMBER = "0712345678"


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        assert self.headers.get_content_type() == "application/json", self.body[:200]
        return json.loads(self.body)


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
    chunked: bool = False,
) -> Answer:
    """One HTTP request on a fresh connection; `token=None` sends no Authorization."""
    sent = dict(headers or {})
    if token is not None:
        sent.setdefault("Authorization", f"Bearer {token}")
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    if raw is not None:
        sent.setdefault("Content-Type", "application/json")
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        if chunked and raw is not None:
            connection.request(method, path, body=iter([raw]), headers=sent, encode_chunked=True)
        else:
            connection.request(method, path, body=raw, headers=sent)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


class ApiServer:
    """`create_app` served by aiohttp's AppRunner on an event loop in a thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = web.AppRunner(app, access_log=None)
        self._run(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self._run(site.start())
        self.port = int(self.runner.addresses[0][1])

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def __call__(self, method: str, path: str, *args: Any, **kwargs: Any) -> Answer:
        return call(self.port, method, path, *args, **kwargs)

    def stop(self) -> None:
        self._run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture
def api(redis_url: str, config_file: Path) -> Iterator[ApiServer]:
    server = ApiServer(create_app(TOKEN, redis_url))
    try:
        yield server
    finally:
        server.stop()


def job(n: int = 3, **fields: Any) -> dict[str, Any]:
    messages = [{"to": f"07{20000000 + i}", "ref": f"r{i}"} for i in range(n)]
    return {"provider": "bulk", "text": "Your code is 1234", "messages": messages, **fields}


def submit(api: ApiServer, body: dict[str, Any]) -> str:
    answer = api("POST", "/v1/jobs", body)
    assert answer.status == 202, answer.body
    return str(answer.json()["job_id"])


def jsonl(answer: Answer) -> list[dict[str, Any]]:
    return [json.loads(line) for line in answer.body.decode().splitlines()]


# --- authentication ---------------------------------------------------------

V1_CALLS = [
    ("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/j1"),
    ("GET", "/v1/jobs/j1/results"), ("POST", "/v1/jobs/j1/cancel"),
    ("POST", "/v1/jobs/j1/pause"), ("POST", "/v1/jobs/j1/resume"),
    ("POST", "/v1/jobs/j1/retry"), ("GET", "/v1/openapi.json"), ("GET", "/v1/no-such-path"),
    ("GET", "/v1/optouts"), ("POST", "/v1/optouts"), ("DELETE", "/v1/optouts/+40712345678"),
    ("POST", "/v1/inbound"), ("GET", "/v1/jobs/j1/timeline"), ("GET", "/v1/jobs/j1/errors"),
    ("GET", "/v1/accounts"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), V1_CALLS)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer "],
)
def test_every_v1_path_answers_401_without_the_right_bearer_token(
    api: ApiServer, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    body = job(job_id="j1") if method == "POST" else None
    answer = api(method, path, body, token=None, headers=headers)
    assert answer.status == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in answer.json()["error"]
    assert api("GET", "/v1/jobs/j1").status == 404  # nothing was submitted


def test_the_right_token_is_accepted_with_any_case_of_the_scheme(api: ApiServer) -> None:
    assert api("GET", "/v1/jobs", token=None, headers={"Authorization": f"bearer {TOKEN}"}).json()
    assert api("GET", "/v1/jobs").status == 200


def test_healthz_needs_no_token_and_pings_redis(api: ApiServer) -> None:
    answer = api("GET", "/healthz", token=None)
    assert answer.status == 200 and answer.json() == {"status": "ok"}


def test_healthz_answers_503_at_once_when_redis_is_down(config_file: Path) -> None:
    server = ApiServer(create_app(TOKEN, f"redis://127.0.0.1:{free_port()}/0"))
    try:
        answer = server("GET", "/healthz", token=None)
        assert answer.status == 503 and "Redis" in answer.json()["error"]
    finally:
        server.stop()


# --- submit, status, results, listing ----------------------------------------


def test_submit_then_status_then_results_as_json_lines(api: ApiServer) -> None:
    answer = api("POST", "/v1/jobs", job(3, job_id="reminders-1"))
    assert answer.status == 202 and answer.json() == {"job_id": "reminders-1"}
    assert answer.headers["Location"] == "/v1/jobs/reminders-1"

    status = api("GET", "/v1/jobs/reminders-1").json()
    assert status["job_id"] == "reminders-1" and status["provider"] == "bulk"
    assert status["state"] == "queued" and status["total"] == 3
    assert status["counts"]["pending"] == 3 and status["finished_at"] is None

    results = api("GET", "/v1/jobs/reminders-1/results")
    assert results.status == 200
    assert results.headers.get_content_type() == "application/jsonl"
    records = jsonl(results)
    assert [r["index"] for r in records] == [0, 1, 2]
    assert [r["to"] for r in records] == ["0720000000", "0720000001", "0720000002"]
    assert {r["status"] for r in records} == {"pending"} and records[1]["ref"] == "r1"


def test_a_job_without_id_gets_one(api: ApiServer) -> None:
    job_id = submit(api, job(1))
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    assert api("GET", f"/v1/jobs/{job_id}").json()["total"] == 1


def test_results_are_streamed_in_chunks_in_order_and_match_the_cli(
    api: ApiServer, producer: Producer
) -> None:
    job_id = submit(api, job(2500))  # three blocks of messages
    answer = api("GET", f"/v1/jobs/{job_id}/results")
    assert answer.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in answer.headers
    records = jsonl(answer)
    assert [r["index"] for r in records] == list(range(2500))
    expected = io.StringIO()
    write_results(producer.results(job_id), expected, "jsonl")
    assert answer.body.decode() == expected.getvalue()

    as_csv = api("GET", f"/v1/jobs/{job_id}/results?format=csv")
    assert as_csv.status == 200 and as_csv.headers.get_content_type() == "text/csv"
    expected = io.StringIO()
    write_results(producer.results(job_id), expected, "csv")
    assert as_csv.body.decode() == expected.getvalue()
    rows = list(csv.DictReader(io.StringIO(as_csv.body.decode())))
    assert len(rows) == 2500 and rows[7]["ref"] == "r7" and rows[7]["index"] == "7"


def test_results_for_one_client_reference(api: ApiServer) -> None:
    job_id = submit(api, job(1200))
    records = jsonl(api("GET", f"/v1/jobs/{job_id}/results?ref=r1100"))
    assert [(r["index"], r["ref"]) for r in records] == [(1100, "r1100")]
    as_csv = api("GET", f"/v1/jobs/{job_id}/results?format=csv&ref=r3").body.decode()
    assert [row["index"] for row in csv.DictReader(io.StringIO(as_csv))] == ["3"]
    assert api("GET", f"/v1/jobs/{job_id}/results?ref=nobody").body == b""


FORMULA_REFS = ['=HYPERLINK("http://x")', "@SUM(1+1)", "-2+3", "+1+1", "\tx", "\rx", "plain"]


def test_csv_cells_a_spreadsheet_would_run_get_a_quote_json_lines_stay_exact(
    api: ApiServer,
) -> None:
    messages = [{"to": "+40712345678", "ref": ref} for ref in FORMULA_REFS]
    messages.append({"to": "=1+2", "ref": "+40712345678"})
    job_id = submit(api, {"provider": "bulk", "text": "hi", "messages": messages})
    rows = list(csv.DictReader(io.StringIO(
        api("GET", f"/v1/jobs/{job_id}/results?format=csv").body.decode(), newline=""
    )))  # fmt: skip
    assert [row["ref"] for row in rows] == [
        "'=HYPERLINK(\"http://x\")", "'@SUM(1+1)", "'-2+3", "'+1+1", "'\tx", "'\rx", "plain",
        "+40712345678",
    ]  # fmt: skip
    assert [row["to"] for row in rows] == ["+40712345678"] * 7 + ["'=1+2"]
    records = jsonl(api("GET", f"/v1/jobs/{job_id}/results"))
    assert [r["ref"] for r in records] == [*FORMULA_REFS, "+40712345678"]
    assert records[-1]["to"] == "=1+2"


def test_results_format_must_be_jsonl_or_csv(api: ApiServer) -> None:
    job_id = submit(api, job(1))
    answer = api("GET", f"/v1/jobs/{job_id}/results?format=xml")
    assert answer.status == 422 and answer.json()["errors"][0]["field"] == "format"


def test_jobs_lists_the_newest_first_with_a_limit(api: ApiServer) -> None:
    for name in ("first", "second", "third"):
        submit(api, job(1, job_id=name))
    listed = api("GET", "/v1/jobs").json()["jobs"]
    assert [s["job_id"] for s in listed] == ["third", "second", "first"]
    assert listed[0]["state"] == "queued" and listed[0]["total"] == 1
    assert [s["job_id"] for s in api("GET", "/v1/jobs?limit=2").json()["jobs"]] == [
        "third",
        "second",
    ]
    for bad in ("0", "-1", "x", "1001"):
        answer = api("GET", f"/v1/jobs?limit={bad}")
        assert answer.status == 422 and answer.json()["errors"][0]["field"] == "limit"


# --- error codes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/nope"), ("GET", "/v1/jobs/nope/results"),
        ("GET", "/v1/jobs/nope/results?format=csv"), ("POST", "/v1/jobs/nope/cancel"),
        ("POST", "/v1/jobs/nope/pause"), ("POST", "/v1/jobs/nope/resume"),
        ("POST", "/v1/jobs/nope/retry"),
    ],
)  # fmt: skip
def test_unknown_job_is_404_with_a_json_error(api: ApiServer, method: str, path: str) -> None:
    answer = api(method, path, {"statuses": ["failed"]} if path.endswith("retry") else None)
    assert answer.status == 404 and answer.json() == {"error": "no such job: nope"}


@pytest.mark.parametrize(
    ("method", "action"),
    [("GET", ""), ("GET", "/results"), ("GET", "/results?format=csv"), ("POST", "/cancel"),
     ("POST", "/pause"), ("POST", "/resume"), ("POST", "/retry")],
)  # fmt: skip
@pytest.mark.parametrize("job_id", ["acc:m:0", "acc:o:0", "acc:done", "x" * 65, "a%20b"])
def test_a_path_id_not_of_the_job_id_form_is_404_touching_nothing(
    api: ApiServer, redis_client: redis.Redis, method: str, action: str, job_id: str
) -> None:
    submit(api, job(2, job_id="acc"))
    before = {key: redis_client.type(key) for key in redis_client.keys("*")}
    answer = api(method, f"/v1/jobs/{job_id}{action}")
    assert answer.status == 404, answer.body
    assert answer.json()["error"].startswith("no such job")
    assert {key: redis_client.type(key) for key in redis_client.keys("*")} == before
    assert api("GET", "/v1/jobs/acc").json()["state"] == "queued"


def test_an_existing_job_id_is_409_and_the_job_is_untouched(api: ApiServer) -> None:
    submit(api, job(2, job_id="once"))
    answer = api("POST", "/v1/jobs", job(5, job_id="once"))
    assert answer.status == 409 and answer.json() == {"error": "job exists: once"}
    assert api("GET", "/v1/jobs/once").json()["total"] == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "bulk", "text": "hi", "messages": [{"to": NUMBER}, {"to": 712345679}]},
         "messages[1].to"),
        ({"provider": "bulk", "text": "hi", "messages": [{"to": NUMBER}, {"to": ""}]},
         "messages[1].to"),
        ({"provider": "bulk", "messages": [{"to": NUMBER}]}, "messages[0].text"),
        ({"provider": "bulk", "text": "hi", "messages": [], "x-secret": "Ab12-Zz"}, "messages"),
        ({"provider": "bulk", "text": "hi", "messages": [{"to": NUMBER}], "pin": "Ab12-Zz"}, "pin"),
        ({"provider": "nobody", "text": "hi", "messages": [{"to": NUMBER}]}, "provider"),
        ({"job_id": "has space 0712345", "provider": "bulk", "text": "hi",
          "messages": [{"to": NUMBER}]}, "job_id"),
        ({"provider": "bulk", "text": "hi", "schedule_at": "tomorrow 0712",
          "messages": [{"to": NUMBER}]}, "schedule_at"),
        ({"provider": "bulk", "text": "hi", "schedule_at": "2999-01-01T00:00:00Z",
          "messages": [{"to": NUMBER}]}, "schedule_at"),
        ({"provider": "bulk", "text": "hi", "validity_minutes": 10**400,
          "messages": [{"to": NUMBER}]}, "validity_minutes"),
        ({"provider": "bulk", "text": "hi", "validity_minutes": 43201,
          "messages": [{"to": NUMBER}]}, "validity_minutes"),
        # json.dumps writes the lone surrogate as "\ud83d", as a JavaScript client does.
        ({"provider": "bulk", "text": "hi \ud83d", "messages": [{"to": NUMBER}]}, "text"),
        ({"provider": "bulk", "text": "hi", "messages": [{"to": NUMBER, "ref": "\ud83d"}]},
         "messages[0].ref"),
        ({"provider": "bulk", "text": "hi", "messages": [{"to": NUMBER, "ref": "r" * 257}]},
         "messages[0].ref"),
        ({"provider": "bulk", "text": "hi", "callback_url": "https://169.254.169.254/latest",
          "messages": [{"to": NUMBER}]}, "callback_url"),
        ({"provider": "bulk", "text": "hi", "callback_url": "http://127.0.0.1:5555/api/task",
          "messages": [{"to": NUMBER}]}, "callback_url"),
    ],
)  # fmt: skip
def test_an_invalid_job_is_422_naming_the_field_without_echoing_input(
    api: ApiServer, redis_client: redis.Redis, body: dict[str, Any], field: str
) -> None:
    answer = api("POST", "/v1/jobs", body)
    assert answer.status == 422
    errors = answer.json()["errors"]
    assert field in [e["field"] for e in errors]
    assert all(set(e) == {"field", "msg", "type"} for e in errors)
    for echoed in (NUMBER, "712345679", "Ab12-Zz", "tomorrow", "has space", '"input"'):
        assert echoed not in answer.body.decode()
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b'"job"'])
def test_a_body_that_is_not_a_job_object_is_422_naming_the_body(
    api: ApiServer, body: bytes
) -> None:
    answer = api("POST", "/v1/jobs", body)
    assert answer.status == 422 and answer.json()["errors"][0]["field"] == "body"


def _padded_job(size: int) -> bytes:
    raw = json.dumps(job(1)).encode()
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_api_max_body_mb_is_413_and_one_at_the_limit_is_accepted(
    redis_url: str, config_file: Path, redis_client: redis.Redis, chunked: bool
) -> None:
    config_file.write_text(config_file.read_text() + "\n[settings]\napi_max_body_mb = 0.01\n")
    limit = int(0.01 * 1024 * 1024)
    assert max_body_bytes_from_config() == limit
    server = ApiServer(create_app(TOKEN, redis_url))
    try:
        over = server("POST", "/v1/jobs", _padded_job(limit + 1), chunked=chunked)
        assert over.status == 413
        assert over.json() == {
            "error": f"request body too large: the limit is {limit} bytes "
            "([settings] api_max_body_mb)"
        }
        assert redis_client.dbsize() == 0
        assert server("POST", "/v1/jobs", _padded_job(limit), chunked=chunked).status == 202
    finally:
        server.stop()


def test_the_default_body_limit_is_64_mib_far_above_aiohttps_1_mib(
    api: ApiServer, config_file: Path
) -> None:
    assert api.app[STATE].max_body_bytes == 64 * 1024 * 1024
    assert api("POST", "/v1/jobs", _padded_job(3 * 1024 * 1024)).status == 202


@pytest.mark.parametrize("value", ["0", "-1", "'big'", "true"])
def test_a_malformed_api_max_body_mb_is_a_config_error_naming_the_key(
    config_file: Path, value: str
) -> None:
    config_file.write_text(config_file.read_text() + f"\n[settings]\napi_max_body_mb = {value}\n")
    with pytest.raises(ConfigError, match=r"settings\.api_max_body_mb"):
        create_app(TOKEN, "redis://127.0.0.1:1/0")


def test_unknown_paths_and_methods_answer_json(api: ApiServer) -> None:
    missing = api("GET", "/v1/nothing-here")
    assert missing.status == 404 and missing.json() == {"error": "no such path"}
    wrong = api("DELETE", "/v1/jobs")
    assert wrong.status == 405 and "not allowed" in wrong.json()["error"]
    assert set(wrong.headers["Allow"].split(",")) >= {"GET", "POST"}


def test_without_any_account_source_submit_is_503_with_the_reason(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SMSBULK_CONFIG", raising=False)
    server = ApiServer(create_app(TOKEN, redis_url))
    try:
        answer = server("POST", "/v1/jobs", job(1))
        assert answer.status == 503 and "SMSBULK_CONFIG" in answer.json()["error"]
    finally:
        server.stop()


# --- job control -------------------------------------------------------------


def test_cancel_answers_the_cancelled_status_then_409(api: ApiServer) -> None:
    job_id = submit(api, job(3))
    answer = api("POST", f"/v1/jobs/{job_id}/cancel")
    assert answer.status == 200
    status = answer.json()
    assert status["job_id"] == job_id and status["state"] == "cancelled"
    assert status["finished_at"] is not None
    again = api("POST", f"/v1/jobs/{job_id}/cancel")
    assert again.status == 409 and "cancelled" in again.json()["error"]


def test_pause_and_resume_answer_the_status(api: ApiServer) -> None:
    job_id = submit(api, job(3))
    paused = api("POST", f"/v1/jobs/{job_id}/pause")
    assert paused.status == 200 and paused.json()["state"] == "paused"
    assert api("GET", f"/v1/jobs/{job_id}").json()["state"] == "paused"
    resumed = api("POST", f"/v1/jobs/{job_id}/resume")
    assert resumed.status == 200 and resumed.json()["state"] == "queued"
    api("POST", f"/v1/jobs/{job_id}/cancel")
    for action in ("pause", "resume"):
        answer = api("POST", f"/v1/jobs/{job_id}/{action}")
        assert answer.status == 409 and answer.json()["error"]


def test_retry_of_a_job_still_running_is_409(api: ApiServer) -> None:
    job_id = submit(api, job(3))
    answer = api("POST", f"/v1/jobs/{job_id}/retry", {"statuses": ["failed", "unknown"]})
    assert answer.status == 409 and "queued" in answer.json()["error"]


def _end_as_failed(client: redis.Redis, job_id: str, total: int) -> None:
    """What a worker leaves when the provider refused every recipient."""
    failed = encode_outcome(
        StoredOutcome("failed", error="refused", attempts=1, updated_at=now_s())
    )
    for index in range(total):
        client.hset(keys.outcomes(job_id, block_of(index)), str(index), failed)
    client.hset(
        keys.job(job_id),
        mapping={"state": "completed", "finished_at": repr(now_s()), "n:f": total},
    )


def test_retry_of_an_ended_job_answers_the_status(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    job_id = submit(api, job(3))
    _end_as_failed(redis_client, job_id, 3)
    assert api("GET", f"/v1/jobs/{job_id}").json()["counts"]["failed"] == 3
    answer = api("POST", f"/v1/jobs/{job_id}/retry", {"statuses": ["failed", "unknown"]})
    assert answer.status == 200
    status = answer.json()
    assert status["job_id"] == job_id and status["state"] == "queued"
    assert status["counts"]["failed"] == 0 and status["counts"]["pending"] == 3
    records = jsonl(api("GET", f"/v1/jobs/{job_id}/results"))
    assert [(r["status"], r["attempts"]) for r in records] == [("pending", 0)] * 3


def test_retry_with_an_empty_body_takes_failed_and_unknown(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    job_id = submit(api, job(2))
    _end_as_failed(redis_client, job_id, 2)
    answer = api("POST", f"/v1/jobs/{job_id}/retry")
    assert answer.status == 200 and answer.json()["counts"]["pending"] == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"statuses": ["accepted"]}', "statuses[0]"),
        (b'{"statuses": []}', "statuses"),
        (b'{"statuses": "failed"}', "statuses"),
        (b'{"statuses": ["failed"], "since": "0712345678"}', "since"),
        (b"{not json", "body"),
    ],
)
def test_retry_with_a_bad_body_is_422_naming_the_field(
    api: ApiServer, redis_client: redis.Redis, body: bytes, field: str
) -> None:
    job_id = submit(api, job(1))
    _end_as_failed(redis_client, job_id, 1)
    answer = api("POST", f"/v1/jobs/{job_id}/retry", body)
    assert answer.status == 422
    assert field in [e["field"] for e in answer.json()["errors"]]
    assert NUMBER not in answer.body.decode()
    status = api("GET", f"/v1/jobs/{job_id}").json()
    assert status["state"] == "completed" and status["counts"]["failed"] == 1


def test_retry_statuses_are_the_ones_job_control_takes() -> None:
    assert set(get_args(RetryStatus)) == set(RETRYABLE_STATUSES)
    assert RetryRequest().statuses == ["failed", "unknown"]


# --- OpenAPI -----------------------------------------------------------------


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_openapi_describes_every_route_and_resolves_every_reference(api: ApiServer) -> None:
    document = api("GET", "/v1/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] and document["info"]["version"]
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in api.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    described = {(method, path) for path, item in document["paths"].items() for method in item}
    assert described == served
    assert len(served) == 19
    for ref in set(_refs(document)):
        node = document
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]  # a KeyError is a dangling reference
    for path, item in document["paths"].items():
        for operation in item.values():
            assert "operationId" in operation and operation["responses"]
            if path.startswith("/v1"):
                assert "401" in operation["responses"]
                assert "security" not in operation  # the document's bearerAuth applies
    for public in ("/healthz", "/", "/console/{name}"):
        assert document["paths"][public]["get"]["security"] == []
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


def test_openapi_carries_the_job_schema_and_its_status_codes(api: ApiServer) -> None:
    document = api("GET", "/v1/openapi.json").json()
    schemas = document["components"]["schemas"]
    contract = job_schema()
    assert schemas["Job"]["properties"].keys() == contract["properties"].keys()
    assert schemas["Job"]["required"] == contract["required"]
    assert schemas["Message"]["properties"] == contract["$defs"]["Message"]["properties"]
    assert schemas["Job"]["properties"]["messages"]["items"] == {
        "$ref": "#/components/schemas/Message"
    }
    paths = document["paths"]
    assert set(paths["/v1/jobs"]["post"]["responses"]) >= {"202", "401", "409", "413", "422"}
    assert set(paths["/v1/jobs/{job_id}"]["get"]["responses"]) >= {"200", "401", "404"}
    for action in ("cancel", "pause", "resume", "retry"):
        responses = paths[f"/v1/jobs/{{job_id}}/{action}"]["post"]["responses"]
        assert set(responses) >= {"200", "404", "409"}
    results = paths["/v1/jobs/{job_id}/results"]["get"]["responses"]["200"]["content"]
    assert set(results) == {"application/jsonl", "text/csv"}


# --- logs ----------------------------------------------------------------------


def test_logs_carry_no_token_body_or_number(api: ApiServer) -> None:
    with structlog.testing.capture_logs() as events:
        job_id = submit(api, job(2, text="secret text 9876"))
        api("GET", f"/v1/jobs/{job_id}/results?ref=r1")
        api("GET", "/v1/jobs", token="wrong-token-value")
        api("POST", "/v1/jobs", {"provider": "bulk", "messages": [{"to": 712345678}]})
    logged = json.dumps(events, default=str)
    assert any(e.get("event") == "job submitted" and e.get("job_id") == job_id for e in events)
    assert any(e.get("event") == "request" and e.get("status") == 401 for e in events)
    for secret in (TOKEN, "wrong-token-value", "secret text", "0720000000", "712345678", "r1"):
        assert secret not in logged


# --- the command -------------------------------------------------------------


def _without_token() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SMSBULK_API_TOKEN"}


def test_smsbulk_api_refuses_to_start_without_a_token() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "api", "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, check=False, env=_without_token(),
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    assert "SMSBULK_API_TOKEN is not set" in done.stderr
    assert "--insecure-no-auth" in done.stderr


def _example_token() -> str:
    env_example = (ROOT / ".env.example").read_text()
    (line,) = [ln for ln in env_example.splitlines() if ln.startswith("SMSBULK_API_TOKEN=")]
    return line.split("=", 1)[1].strip()


@pytest.mark.parametrize(
    "token",
    ["x" * 31, "change-me", _example_token(), f"  {_example_token()} "],
    ids=["31-characters", "change-me", "env-example", "env-example-padded"],
)
def test_smsbulk_api_refuses_a_short_or_example_token_and_says_how_to_make_one(
    token: str,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "api", "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, check=False,
        env={**_without_token(), "SMSBULK_API_TOKEN": token},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout == ""
    assert "smsbulk: configuration error: SMSBULK_API_TOKEN" in done.stderr
    assert "python -c 'import secrets; print(secrets.token_urlsafe(32))'" in done.stderr
    assert token.strip() not in done.stderr


def test_smsbulk_api_insecure_no_auth_serves_without_a_token(
    redis_url: str, config_file: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {**_without_token(), "SMSBULK_REDIS_URL": redis_url, "PYTHONWARNINGS": "ignore"}
    process = Process(
        "api",
        smsbulk_argv("api", "--port", str(port), "--insecure-no-auth"),
        env,
        tmp_path / "api.log",
    )
    try:
        wait_until(lambda: port_open(port) or not process.alive(), 30, "the API to listen")
        assert process.alive(), process.output()
        answer = call(port, "GET", "/v1/jobs", token=None)
        assert answer.status == 200 and answer.json() == {"jobs": []}
    finally:
        process.stop()
    assert "authentication is off" in process.output()


def test_a_results_stream_that_fails_midway_is_cut_not_ended(
    api: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit(api, job(1200))
    state = api.app[STATE]
    real = state.producer.results

    def failing(job_id: str, ref: str | None = None) -> Iterator[Any]:
        outcomes = real(job_id, ref)
        yield from islice(outcomes, 700)
        raise redis.exceptions.ConnectionError("Redis went away")

    monkeypatch.setattr(state.producer, "results", failing)
    with pytest.raises(http.client.IncompleteRead) as cut:
        api("GET", f"/v1/jobs/{job_id}/results")
    assert cut.value.partial.count(b"\n") == BATCH_RECORDS  # the first batch arrived


def test_a_client_leaving_midway_ends_the_stream_quietly(api: ApiServer) -> None:
    job_id = submit(api, job(20_000))
    with structlog.testing.capture_logs() as events:
        connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
        connection.request(
            "GET", f"/v1/jobs/{job_id}/results", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        response = connection.getresponse()
        assert response.status == 200 and response.read(1000)
        connection.close()
        wait_until(
            lambda: any(e["event"] == "results client gone" for e in events), 10, "the stream end"
        )
    assert not any(e["event"] == "results sent" for e in events)
    assert api("GET", f"/v1/jobs/{job_id}").status == 200
