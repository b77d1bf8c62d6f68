"""The API's OpenAPI 3.1 document, built from the pydantic models: the job's
schema is ``job_schema()`` itself, its ``$defs`` moved to the components."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from producer.api.optouts import MAX_NUMBERS, InboundReply, OptOutRequest
from producer.core import keys
from producer.job import JobStatus, Outcome, job_schema
from producer.monitoring import MAX_ERROR_GROUPS

REF = "#/components/schemas/{model}"
VERSION = "1"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _relink(node: Any) -> Any:
    """Point ``#/$defs/X`` references at ``#/components/schemas/X``."""
    if isinstance(node, dict):
        return {
            key: (
                REF.format(model=value.removeprefix("#/$defs/"))
                if key == "$ref" and isinstance(value, str)
                else _relink(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_relink(item) for item in node]
    return node


def _components(schema: dict[str, Any]) -> dict[str, Any]:
    """A model's schema and its ``$defs`` as component schemas."""
    schema = dict(schema)
    defs = schema.pop("$defs", {})
    return {schema["title"]: _relink(schema), **{name: _relink(d) for name, d in defs.items()}}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description}
    if schema is not None:
        answer["content"] = _json(schema)
    return answer


ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "404": {"$ref": "#/components/responses/NoSuchJob"},
    "409": {"$ref": "#/components/responses/Conflict"},
    "413": {"$ref": "#/components/responses/TooLarge"},
    "422": {"$ref": "#/components/responses/Invalid"},
    "503": {"$ref": "#/components/responses/Unavailable"},
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: ERRORS[code] for code in ("401", *codes, "503")}


JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,64}$"},
}
STATUS = _answer("The job status.", _ref("JobStatus"))


def _control(verb: str, summary: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": f"{verb}Job",
            "summary": summary,
            "parameters": [JOB_ID],
            "responses": {"200": STATUS, **_errors("404", "409")},
        }
    }


def _paths() -> dict[str, Any]:
    return {
        "/v1/jobs": {
            "post": {
                "operationId": "submitJob",
                "summary": "Submit a job; it is known to every other call at once.",
                "requestBody": {"required": True, "content": _json(_ref("Job"))},
                "responses": {
                    "202": _answer("Accepted and queued (or scheduled).", _ref("Accepted")),
                    **_errors("409", "413", "422"),
                },
            },
            "get": {
                "operationId": "listJobs",
                "summary": "The newest jobs' statuses, newest first.",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20},
                    }
                ],
                "responses": {"200": _answer("Job statuses.", _ref("JobList")), **_errors("422")},
            },
        },
        "/v1/jobs/{job_id}": {
            "get": {
                "operationId": "getJob",
                "summary": "The job status (live counts per outcome status).",
                "parameters": [JOB_ID],
                "responses": {"200": STATUS, **_errors("404")},
            }
        },
        "/v1/jobs/{job_id}/results": {
            "get": {
                "operationId": "getResults",
                "summary": "One outcome record per message, in the job's order, streamed.",
                "parameters": [
                    JOB_ID,
                    {
                        "name": "format",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["jsonl", "csv"], "default": "jsonl"},
                    },
                    {
                        "name": "ref",
                        "in": "query",
                        "description": "Only the records with this client reference.",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "JSON Lines: one Outcome a line; CSV: Outcome fields.",
                        "content": {
                            "application/jsonl": {"schema": _ref("Outcome")},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors("404", "422"),
                },
            }
        },
        "/v1/jobs/{job_id}/cancel": _control(
            "cancel", "Recipients not yet sent become cancelled; in-flight requests finish."
        ),
        "/v1/jobs/{job_id}/pause": _control("pause", "No request of the job starts until resume."),
        "/v1/jobs/{job_id}/resume": {
            "post": {
                "operationId": "resumeJob",
                "summary": "Resume a paused job; a body may raise its max_cost.",
                "parameters": [JOB_ID],
                "requestBody": {"required": False, "content": _json(_ref("ResumeRequest"))},
                "responses": {"200": STATUS, **_errors("404", "409", "413", "422")},
            }
        },
        "/v1/jobs/{job_id}/retry": {
            "post": {
                "operationId": "retryJob",
                "summary": "Send the recipients with these final statuses again, as new attempts.",
                "parameters": [JOB_ID],
                "requestBody": {"required": False, "content": _json(_ref("RetryRequest"))},
                "responses": {"200": STATUS, **_errors("404", "409", "413", "422")},
            }
        },
        **_console_paths(),
        **_optout_paths(),
        "/v1/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "responses": {"200": _answer("OpenAPI 3.1.", {"type": "object"}), **_errors()},
            }
        },
        "/": {
            "get": {
                "operationId": "console",
                "summary": "The operator console (HTML); it asks for the token itself.",
                "security": [],
                "responses": {"200": {"description": "The page.", "content": {"text/html": {}}}},
            }
        },
        "/console/{name}": {
            "get": {
                "operationId": "consoleAsset",
                "summary": "The console's script and style.",
                "security": [],
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {"description": "The file."},
                    "404": {"description": "No such file."},
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: Redis answers PING. No token needed.",
                "security": [],
                "responses": {
                    "200": _answer("Healthy.", _ref("Health")),
                    "503": ERRORS["503"],
                },
            }
        },
    }


def _console_paths() -> dict[str, Any]:
    """What the console reads (also public API)."""
    return {
        "/v1/jobs/{job_id}/timeline": {
            "get": {
                "operationId": "getTimeline",
                "summary": "Recipients accepted per second over the job's life, oldest first: "
                f"at most {keys.TIMELINE_BUCKETS} points (a long job's are wider buckets).",
                "parameters": [JOB_ID],
                "responses": {
                    "200": _answer(
                        "One point per bucket that counted any.",
                        {"type": "array", "items": _ref("TimelinePoint")},
                    ),
                    **_errors("404"),
                },
            }
        },
        "/v1/jobs/{job_id}/errors": {
            "get": {
                "operationId": "getErrors",
                "summary": "The job's final outcomes with an error, grouped by error code, "
                f"most frequent first (at most {MAX_ERROR_GROUPS} codes).",
                "parameters": [JOB_ID],
                "responses": {
                    "200": _answer("Error groups.", {"type": "array", "items": _ref("ErrorGroup")}),
                    **_errors("404"),
                },
            }
        },
        "/v1/accounts": {
            "get": {
                "operationId": "listAccounts",
                "summary": "Each provider account: kind, limits and live figures "
                "(parts/s, 429s, circuit, stop, parts today).",
                "responses": {
                    "200": _answer("The accounts, by name.", _ref("AccountList")),
                    **_errors(),
                },
            }
        },
    }


def _console_schemas() -> dict[str, Any]:
    number = {"type": "number"}
    count = {"type": "integer", "minimum": 0}
    statuses = {"type": "object", "additionalProperties": count}
    limits = {
        "type": ["object", "null"],
        "description": "As the workers apply them; null until a worker has started.",
        "properties": {
            "messages_per_second": number,
            "requests_per_second": number,
            "burst_s": number,
            "batch_size": {"type": "integer"},
            "daily_max_parts": {"type": ["integer", "null"]},
            "failover_after_failures": {"type": "integer"},
            "failover_cooldown_s": number,
        },
    }
    return {
        "TimelinePoint": _object(
            {
                "t": {"type": "integer", "description": "The bucket's start (epoch s)."},
                "n": {"type": "number", "description": "Recipients accepted per second."},
                "s": {"type": "integer", "description": "The bucket's width (s)."},
            }
        ),
        "ErrorGroup": _object(
            {
                "code": {"type": ["string", "null"], "description": "The error code."},
                "error": {"type": ["string", "null"], "description": "One of their texts."},
                "count": count,
                "statuses": {**statuses, "description": "The count by final status."},
            }
        ),
        "AccountList": _object(
            {
                "accounts": {
                    "type": "array",
                    "items": _object(
                        {
                            "account": {"type": "string"},
                            "kind": {"type": "string"},
                            "circuit": {"type": "string", "enum": ["closed", "open"]},
                            "failures": {**count, "description": "Consecutive failed requests."},
                            "parts_today": {**count, "description": "Counted with a daily cap."},
                            "stopped": {
                                "type": ["string", "null"],
                                "description": "Why sending is stopped (bad credentials).",
                            },
                            "parts_per_second": {
                                **number,
                                "description": "SMS parts taken per second, last 5 s.",
                            },
                            "throttled_last_minute": {
                                **count,
                                "description": "HTTP 429 answers in the last minute.",
                            },
                            "limits": limits,
                        }
                    ),
                }
            }
        ),
    }


def _optout_paths() -> dict[str, Any]:
    return {
        "/v1/optouts": {
            "get": {
                "operationId": "listOptOuts",
                "summary": "Every number on the opt-out list (E.164, sorted).",
                "responses": {"200": _answer("The list.", _ref("OptOutList")), **_errors()},
            },
            "post": {
                "operationId": "addOptOuts",
                "summary": f"Add up to {MAX_NUMBERS:,} numbers to the opt-out list; "
                "one invalid number refuses them all.",
                "requestBody": {"required": True, "content": _json(_ref("OptOutRequest"))},
                "responses": {
                    "200": _answer(
                        "The numbers as stored, and how many were new.", _ref("OptOutsAdded")
                    ),
                    **_errors("413", "422"),
                },
            },
        },
        "/v1/optouts/{e164}": {
            "delete": {
                "operationId": "removeOptOut",
                "summary": "Remove a number from the opt-out list (it is sent to again).",
                "parameters": [
                    {
                        "name": "e164",
                        "in": "path",
                        "required": True,
                        "description": "The number in E.164 (`+` may be sent as %2B).",
                        "schema": {"type": "string", "examples": ["+40712345678"]},
                    }
                ],
                "responses": {
                    "200": _answer("Whether it was listed.", _ref("OptOutRemoved")),
                    **_errors("422"),
                },
            }
        },
        "/v1/inbound": {
            "post": {
                "operationId": "inboundReply",
                "summary": "A reply forwarded by the operator's receiver: a STOP keyword "
                "first adds its number to the opt-out list.",
                "requestBody": {"required": True, "content": _json(_ref("InboundReply"))},
                "responses": {
                    "200": _answer("Whether the number was opted out.", _ref("InboundAnswer")),
                    **_errors("413", "422"),
                },
            }
        },
    }


def _optout_schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (OptOutRequest, InboundReply):
        schemas.update(_components(model.model_json_schema()))
    numbers = {"type": "array", "items": {"type": "string", "examples": ["+40712345678"]}}
    schemas.update(
        OptOutList=_object({"numbers": numbers, "count": {"type": "integer"}}),
        OptOutsAdded=_object({"numbers": numbers, "added": {"type": "integer"}}),
        OptOutRemoved=_object({"e164": {"type": "string"}, "removed": {"type": "boolean"}}),
        InboundAnswer=_object(
            {
                "from": {"type": "string", "description": "The number in E.164."},
                "opted_out": {"type": "boolean"},
                "keyword": {"type": ["string", "null"], "examples": ["STOP"]},
            }
        ),
    )
    return schemas


def _schemas(*body_models: type[BaseModel]) -> dict[str, Any]:
    schemas: dict[str, Any] = {**_components(job_schema())}
    models: tuple[type[BaseModel], ...] = (JobStatus, Outcome, *body_models)
    for model in models:
        schemas.update(_components(model.model_json_schema(mode="serialization")))
    schemas.update(
        Accepted=_object({"job_id": {"type": "string"}}),
        JobList=_object({"jobs": {"type": "array", "items": _ref("JobStatus")}}),
        Error=_object({"error": {"type": "string"}}),
        Errors=_object(
            {
                "errors": {
                    "type": "array",
                    "items": _object(
                        {
                            "field": {"type": "string", "examples": ["messages[3].to"]},
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        }
                    ),
                }
            }
        ),
        Health=_object({"status": {"type": "string", "const": "ok"}}),
        **_optout_schemas(),
        **_console_schemas(),
    )
    return schemas


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


def openapi_document(*body_models: type[BaseModel]) -> dict[str, Any]:
    """The document; ``body_models``: the API's own request bodies (retry's, resume's)."""
    error = _ref("Error")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smsbulk",
            "version": VERSION,
            "description": "Submit bulk SMS jobs, follow them, control them, read their outcomes.",
        },
        "security": [{"bearerAuth": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The value of SMSBULK_API_TOKEN.",
                }
            },
            "schemas": _schemas(*body_models),
            "responses": {
                "Unauthorized": {
                    "description": "Missing or wrong bearer token.",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                    "content": _json(error),
                },
                "NoSuchJob": _answer("No such job.", error),
                "Conflict": _answer("The job exists, or its state forbids this.", error),
                "TooLarge": _answer("Body over [settings] api_max_body_mb.", error),
                "Invalid": _answer(
                    "Invalid input: pydantic's errors by field, without input values.",
                    _ref("Errors"),
                ),
                "Unavailable": _answer("Redis or the configuration is unavailable.", error),
            },
        },
    }
