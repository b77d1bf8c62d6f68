"""``max_cost`` over real HTTP (no worker): refused at submission with 422
naming it; ``POST /v1/jobs/{id}/resume`` with ``{"max_cost": "X"}``; the
status's ``spent`` and ``pause_reason``; the OpenAPI document says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer.api.app import ResumeRequest, RetryRequest, create_app
from producer.api.openapi import openapi_document
from tests.conftest import FAST, sandbox_account
from tests.producer.api.test_app import TOKEN, ApiServer, job, submit
from tests.producer.test_control import mark_running
from tests.producer.test_max_cost import reserve


@pytest.fixture
def api(redis_url: str, config_file: Path) -> Iterator[ApiServer]:
    config_file.write_text(
        sandbox_account("bulk", "http://127.0.0.1:9", **FAST, price_per_part=0.05, currency="EUR")
        + sandbox_account("free", "http://127.0.0.1:9", **FAST)
    )
    server = ApiServer(create_app(TOKEN, redis_url))
    try:
        yield server
    finally:
        server.stop()


def test_a_job_whose_account_has_no_price_is_422_naming_max_cost(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    answer = api("POST", "/v1/jobs", job(provider="free", max_cost="5"))
    assert answer.status == 422
    (error,) = answer.json()["errors"]
    assert error["field"] == "max_cost" and "price_per_part" in error["msg"]
    assert redis_client.keys("*") == []


def test_resume_with_a_body_raises_the_cap_and_the_status_shows_it(
    api: ApiServer, redis_client: redis.Redis
) -> None:
    job_id = submit(api, job(3, max_cost="0.10"))
    mark_running(redis_client, job_id)
    reserve(redis_client, job_id, 100_000)
    assert reserve(redis_client, job_id, 50_000) == "capped"
    status = api("GET", f"/v1/jobs/{job_id}").json()
    assert (status["state"], status["pause_reason"], status["spent"]) == (
        "paused",
        "max_cost",
        "0.1",
    )
    low = api("POST", f"/v1/jobs/{job_id}/resume", {"max_cost": "0.05"})
    assert low.status == 422
    assert low.json()["errors"][0]["field"] == "max_cost"
    assert "spent already (0.1)" in low.json()["errors"][0]["msg"]
    malformed = api("POST", f"/v1/jobs/{job_id}/resume", {"max_cost": 3})
    assert malformed.status == 422 and malformed.json()["errors"][0]["field"] == "max_cost"
    unknown = api("POST", f"/v1/jobs/{job_id}/resume", {"max_cots": "3"})
    assert unknown.status == 422 and unknown.json()["errors"][0]["field"] == "max_cots"
    resumed = api("POST", f"/v1/jobs/{job_id}/resume", {"max_cost": "0.30"})
    assert resumed.status == 200
    status = resumed.json()
    assert (status["state"], status["max_cost"], status["pause_reason"]) == ("queued", "0.3", None)


def test_resume_without_a_body_still_resumes(api: ApiServer) -> None:
    job_id = submit(api, job(3, max_cost="1"))
    api("POST", f"/v1/jobs/{job_id}/pause")
    answer = api("POST", f"/v1/jobs/{job_id}/resume")
    assert answer.status == 200 and answer.json()["state"] == "queued"
    assert answer.json()["max_cost"] == "1"


def test_the_openapi_document_describes_spent_pause_reason_and_the_resume_body(
    api: ApiServer,
) -> None:
    document = api("GET", "/v1/openapi.json").json()
    assert document == openapi_document(RetryRequest, ResumeRequest)
    schemas = document["components"]["schemas"]
    status = schemas["JobStatus"]["properties"]
    for name in ("spent", "max_cost", "pause_reason"):
        assert status[name]["description"], name
    assert {"const": "max_cost", "type": "string"} in status["pause_reason"]["anyOf"]
    assert "max_cost" in schemas["Job"]["properties"]
    assert schemas["ResumeRequest"]["properties"]["max_cost"]["anyOf"][0]["pattern"]
    resume = document["paths"]["/v1/jobs/{job_id}/resume"]["post"]
    assert resume["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ResumeRequest"
    }
    assert "422" in resume["responses"]
