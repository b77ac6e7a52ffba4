"""GET /openapi.json: every route of the API, with the request schema taken from the contract."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from contract.job import JobSpec, WebhookSpec

_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_PATH_PARAMETER = re.compile(r"\{(\w+)(?::(\w+))?\}")
_ERRORS = {
    "401": {
        "description": "missing or invalid API key",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    },
    "404": {
        "description": "no such job for this key",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    },
    "500": {
        "description": "Kafka refused a record for good; the request was valid, sending it again will not help "
        "(a submit's job never runs: X-Job-Id names it)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    },
    "503": {
        "description": "Kafka is unavailable. Nothing was done, except for a submit Kafka did not confirm in time: "
        "X-Job-Id names its job, which goes on in the background and either runs or ends FAILED",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    },
}
_HEALTH_BODY = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {
                "status": {"enum": ["ok", "unavailable"]},
                "kafka": {"enum": ["connected", "unreachable"]},
                "parts": {
                    "type": "object",
                    "description": "producer, state_view, stream_hub: each {ok, following, lag_s, problem}",
                    "additionalProperties": {
                        "type": "object",
                        "properties": {
                            "ok": {"type": "boolean"},
                            "following": {"type": "boolean"},
                            "lag_s": {"type": ["number", "null"]},
                            "problem": {"type": "string"},
                        },
                        "required": ["ok"],
                    },
                },
                "jobs_known": {"type": "integer"},
            },
            "required": ["status", "kafka", "parts"],
        }
    }
}
_HEALTH = {
    "200": {"description": "ready", "content": _HEALTH_BODY},
    "503": {"description": "not ready: `parts` says which part and why", "content": _HEALTH_BODY},
}
_STATUS = {"application/json": {"schema": {"$ref": "#/components/schemas/JobStatus"}}}


def build_spec(routes: Sequence[BaseRoute] = ()) -> dict[str, Any]:
    """The native API in detail; every other route (dialects, streams) from its handler's docstring."""
    spec = _native_spec()
    for route in routes:
        raw_path = getattr(route, "path", None)
        if raw_path is None:
            continue
        path = _PATH_PARAMETER.sub(r"{\1}", raw_path)  # "{index:int}" is "{index}" in OpenAPI
        documented = spec["paths"].setdefault(path, {})
        endpoint = getattr(route, "endpoint", None)
        doc = (endpoint.__doc__ or "").strip().splitlines() if endpoint else []
        summary = doc[0] if doc else f"see {getattr(endpoint, '__module__', 'the README')}"
        for method in sorted((getattr(route, "methods", None) or {"GET"}) - {"HEAD"}):
            documented.setdefault(method.lower(), _described(summary, raw_path, method))
    return spec


def _described(summary: str, raw_path: str, method: str) -> dict[str, Any]:
    """A route documented by its summary: its path parameters, and a JSON object body for a POST."""
    operation: dict[str, Any] = {"summary": summary, "responses": {"200": {"description": "see summary"}}}
    parameters = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "integer", "minimum": 0} if converter == "int" else {"type": "string"}}
        for name, converter in _PATH_PARAMETER.findall(raw_path)
    ]
    if parameters:
        operation["parameters"] = parameters
    if method == "POST":
        operation["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
    return operation


def _native_spec() -> dict[str, Any]:
    submit_schema = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    submit_schema["properties"]["webhook"] = {
        "description": "a URL, or an object {url, track_id, events}",
        "anyOf": [{"type": "string", "format": "uri"}, {"$ref": "#/components/schemas/WebhookSpec"}],
    }
    submit_schema["properties"]["track_id"] = {"type": "string", "description": "echoed in webhook deliveries"}
    submit_schema["properties"]["key"] = {"type": "string", "description": "API key, if not sent as a Bearer token"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Easel", "version": "0.1.0", "description": "Event-driven SDXL text-to-image service."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "JobRequest": submit_schema,
                "WebhookSpec": WebhookSpec.model_json_schema(),
                "JobStatus": _job_status_schema(),
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "field": {"type": "string"},
                                "details": {"type": "array", "items": {"type": "object"}},
                            },
                            "required": ["code", "message"],
                        }
                    },
                },
            },
        },
        "paths": {
            "/v1/jobs": {
                "post": {
                    "summary": "Submit a job; answers 202 once Kafka acknowledged it",
                    "security": _AUTH,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}},
                    },
                    "responses": {
                        "202": {"description": "queued", "content": _STATUS},
                        "400": {"description": "malformed JSON"},
                        "422": {"description": "a field breaks a rule; `error.field` names it"},
                        **_ERRORS,
                    },
                }
            },
            "/v1/jobs/{job_id}": {
                "get": {
                    "summary": "The job's state, timings, progress and outputs (fetch_result)",
                    "security": _AUTH,
                    "parameters": [
                        _JOB_ID,
                        {
                            "name": "wait",
                            "in": "query",
                            "description": "seconds to wait for a terminal state",
                            "schema": {"type": "number", "minimum": 0, "maximum": 60},
                        },
                    ],
                    "responses": {"200": {"description": "status", "content": _STATUS}, **_ERRORS},
                }
            },
            "/v1/jobs/{job_id}/images/{index}": {
                "get": {
                    "summary": "One output image",
                    "security": _AUTH,
                    "parameters": [
                        _JOB_ID,
                        {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
                    ],
                    "responses": {
                        "200": {
                            "description": "the image",
                            "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
                        },
                        **_ERRORS,
                    },
                }
            },
            "/v1/jobs/{job_id}/cancel": {
                "post": {
                    "summary": "Ask the runners to stop the job",
                    "security": _AUTH,
                    "parameters": [_JOB_ID],
                    "responses": {"202": {"description": "cancel requested", "content": _STATUS}, **_ERRORS},
                }
            },
            "/health": {
                "get": {
                    "summary": "Readiness (as /health/ready) plus jobs_known",
                    "responses": {"200": _HEALTH["200"], "503": _HEALTH["503"]},
                }
            },
            "/health/live": {
                "get": {
                    "summary": "Liveness: 200 whenever the process answers; never asks Kafka",
                    "responses": {"200": {"description": "the process serves requests"}},
                }
            },
            "/health/ready": {
                "get": {
                    "summary": "Readiness: 200 only when Kafka is connected and every view is caught up",
                    "responses": {"200": _HEALTH["200"], "503": _HEALTH["503"]},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition format"}},
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}
            },
        },
    }


def _job_status_schema() -> dict[str, Any]:
    nullable_number = {"type": ["number", "null"]}
    return {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "state": {"enum": ["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]},
            "seq": {"type": "integer"},
            "created_at": {"type": "number"},
            "started_at": nullable_number,
            "finished_at": nullable_number,
            "delay_ms": {"type": ["integer", "null"]},
            "execution_ms": {"type": ["integer", "null"]},
            "attempt": {"type": "integer"},
            "runner_id": {"type": ["string", "null"]},
            "progress": {"type": ["object", "null"]},
            "outputs": {"type": "array", "items": {"type": "object"}},
            "seeds": {"type": "array", "items": {"type": "integer"}},
            "error": {"type": ["string", "null"]},
            "track_id": {"type": "string"},
            "links": {"type": "object"},
        },
        "required": ["id", "state"],
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)
