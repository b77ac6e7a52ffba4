"""GET /openapi.json: every route of the API, with the request schema taken from the contract."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from contract.job import MAX_EXECUTION_TIMEOUT_S, MAX_TTL_S, JobSpec, WebhookSpec
from contract.states import JobState
from service.job_list import MAX_LIMIT

_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_PATH_PARAMETER = re.compile(r"\{(\w+)(?::(\w+))?\}")
_ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
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
        "required": ["error"],
    },
    "RunPodError": {
        "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"],
        "description": "validation problems joined with newlines, each `field: rule`",
    },
    "ModelsLabError": {
        "type": "object",
        "properties": {"status": {"const": "error"}, "message": {"type": "string"}, "retry_after": {"type": "number"}},
        "required": ["status", "message"],
    },
    "A1111Error": {
        "type": "object",
        "description": "FastAPI's `{detail}` (a list of `{loc, msg, type}` for a bad body), or A1111's own "
        "`{error, detail, body, errors}`",
        "properties": {"detail": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "object"}}]}},
    },
    "SkidioError": {"type": "object", "properties": {"error": {"type": "string"}}},
}
# Each dialect's routes (by path prefix, as service/errors.py picks the dialect): its error body and the statuses
# its errors can have (RunPod, ModelsLab and Skidio answer 400 where the others say 409 or 422).
_DIALECT_ERRORS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("/api/v6/", "ModelsLabError", (400, 401, 404, 413, 429, 500, 503)),
    ("/v2/", "RunPodError", (400, 401, 404, 413, 429, 500, 503)),
    ("/sdapi/v1/", "A1111Error", (400, 401, 404, 409, 413, 422, 429, 500, 503, 504)),
    ("/api/txt2img", "SkidioError", (400, 401, 404, 413, 429, 500, 503)),
)
_NATIVE_ERROR_CODES = (400, 401, 404, 409, 413, 422, 429, 500, 503)
_ERROR_MEANINGS = {
    400: "malformed JSON or query parameter (in some dialects also a field that breaks a rule)",
    401: "missing or invalid API key",
    404: "no such job (or file) for this key",
    409: "the job is in a state that does not allow this",
    413: "the body, or the request it echoes, is too large",
    422: "a field breaks a rule; the error names the field as the client sent it",
    429: "the key's queue (or stream) limit is reached; Retry-After says when to try again",
    500: "Kafka refused a record for good, or an internal error; the request was valid, sending it again will "
    "not help (a submit's job never runs: X-Job-Id names it)",
    503: "Kafka is unavailable. Nothing was done, except for a submit Kafka did not confirm in time: X-Job-Id names "
    "its job, which goes on in the background and either runs or ends FAILED",
    504: "the job did not finish while the request waited (A1111's txt2img is synchronous)",
}
# Routes that answer without a key: no 401.
_OPEN_PATHS = ("/health", "/metrics", "/openapi.json", "/", "/playground/{name}", "/files/{job_id}/{index}")
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
# Success answers other than a 200 with no schema given, for routes documented from their docstring.
_SUCCESSES: dict[tuple[str, str], dict[str, Any]] = {
    ("/api/txt2img", "POST"): {"200": {"description": "the images (JSON, or PNG bytes for Accept: image/png)"},
                               "202": {"description": "not finished within the wait: poll the status"}},
    ("/api/txt2img/async", "POST"): {"202": {"description": "queued"}},
    ("/v1/jobs/{job_id}/events", "GET"): {"200": {"description": "Server-Sent Events", "content": {
        "text/event-stream": {}}}, "204": {"description": "the job ended: stop reconnecting"}},
    ("/", "GET"): {"200": {"description": "the playground", "content": {"text/html": {}}}},
    ("/files/{job_id}/{index}", "GET"): {"200": {"description": "the image", "content": {
        "image/png": {}, "image/jpeg": {}, "image/webp": {}}}},
}


def build_spec(routes: Sequence[BaseRoute] = ()) -> dict[str, Any]:
    """The native and RunPod APIs in detail; every other route (dialects, streams) from its handler's docstring,
    with its path parameters, a JSON body for a POST, and its dialect's error answers."""
    spec = _native_spec()
    spec["paths"] |= _runpod_paths()
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
            documented.setdefault(method.lower(), _described(summary, raw_path, path, method))
    return spec


def _described(summary: str, raw_path: str, path: str, method: str) -> dict[str, Any]:
    """A route documented by its summary: its path parameters, a JSON object body for a POST, its answers."""
    responses = _SUCCESSES.get((path, method), {"200": {"description": "see summary"}})
    operation: dict[str, Any] = {"summary": summary, "responses": {**responses, **_errors(path)}}
    parameters = [
        {"name": name, "in": "path", "required": True,
         "schema": {"type": "integer", "minimum": 0} if converter == "int" else {"type": "string"}}
        for name, converter in _PATH_PARAMETER.findall(raw_path)
    ]
    if parameters:
        operation["parameters"] = parameters
    if method == "POST":
        operation["requestBody"] = {"content": {"application/json": {"schema": {"type": "object"}}}}
    if path not in _OPEN_PATHS:
        operation["security"] = _AUTH
    return operation


def _errors(path: str, codes: Sequence[int] | None = None) -> dict[str, Any]:
    """The error answers of a route, in its dialect's shape."""
    schema, dialect_codes = next(
        ((schema, codes) for prefix, schema, codes in _DIALECT_ERRORS if path.startswith(prefix)),
        ("Error", _NATIVE_ERROR_CODES),
    )
    wanted = [code for code in codes or dialect_codes if code != 401 or path not in _OPEN_PATHS]
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    return {str(code): {"description": _ERROR_MEANINGS[code], "content": content} for code in wanted}


def _native_spec() -> dict[str, Any]:
    submit_schema = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    submit_schema["properties"]["webhook"] = {
        "description": "a URL, or an object {url, track_id, events}",
        "anyOf": [{"type": "string", "format": "uri"}, {"$ref": "#/components/schemas/WebhookSpec"}],
    }
    for field, what in (("init_image", "img2img: the init image"), ("mask_image", "inpainting: the mask")):
        # A client sends the image itself; the job (its status's `spec`) carries the key it was stored under.
        submit_schema["properties"][field] = {
            "type": ["string", "null"],
            "description": f"{what}, as base64 (or a data:image/...;base64, URL) or an http(s) URL; PNG, JPEG or "
            "WEBP, within EASEL_MAX_INPUT_IMAGE_BYTES and EASEL_MAX_INPUT_IMAGE_PIXELS",
        }
    submit_schema["properties"]["track_id"] = {"type": "string", "description": "echoed in webhook deliveries"}
    submit_schema["properties"]["key"] = {"type": "string", "description": "API key, if not sent as a Bearer token"}
    submit_schema["additionalProperties"] = False
    native = "/v1/jobs"
    return {
        "openapi": "3.1.0",
        "info": {"title": "Easel", "version": "0.1.0", "description": "Event-driven SDXL text-to-image service."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "JobRequest": submit_schema,
                "WebhookSpec": WebhookSpec.model_json_schema(),
                "JobStatus": _job_status_schema(),
                **_ERROR_SCHEMAS,
                **_RUNPOD_SCHEMAS,
            },
        },
        "paths": {
            "/v1/jobs": {
                "post": {
                    "summary": "Submit a job; answers 202 once Kafka acknowledged it. Types are strict: "
                    "`\"steps\": true` or `\"width\": \"64\"` is a 422 naming the field",
                    "security": _AUTH,
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}},
                    },
                    "responses": {"202": {"description": "queued", "content": _STATUS}, **_errors(native)},
                },
                "get": {
                    "summary": "The key's most recent jobs, newest first",
                    "security": _AUTH,
                    "parameters": [{
                        "name": "limit", "in": "query", "description": "how many (20 when absent)",
                        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT},
                    }],
                    "responses": {
                        "200": {"description": "the jobs", "content": {"application/json": {"schema": {
                            "type": "object",
                            "properties": {"jobs": {"type": "array", "items": {
                                "allOf": [{"$ref": "#/components/schemas/JobStatus"}],
                                "properties": {"prompt": {"type": ["string", "null"]}},
                            }}},
                            "required": ["jobs"],
                        }}}},
                        **_errors(native, (400, 401, 503)),
                    },
                },
            },
            "/v1/jobs/{job_id}": {
                "get": {
                    "summary": "The job's status, timings, progress and outputs (fetch_result)",
                    "security": _AUTH,
                    "parameters": [
                        _JOB_ID,
                        {
                            "name": "wait",
                            "in": "query",
                            "description": "seconds to wait for a terminal state (at most EASEL_MAX_WAIT_S)",
                            "schema": {"type": "number", "minimum": 0},
                        },
                    ],
                    "responses": {
                        "200": {"description": "status", "content": _STATUS}, **_errors(native, (400, 401, 404, 503))
                    },
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
                        **_errors(native, (401, 404, 500, 503)),
                    },
                }
            },
            "/v1/jobs/{job_id}/cancel": {
                "post": {
                    "summary": "Stop the job: a queued one ends CANCELLED at once, a running one at its next step",
                    "security": _AUTH,
                    "parameters": [_JOB_ID],
                    "responses": {
                        "202": {"description": "cancel requested; the job's status after it", "content": _STATUS},
                        **_errors(native, (401, 404, 500, 503)),
                    },
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
                    "responses": {"200": {"description": "text exposition format", "content": {"text/plain": {}}}},
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}
            },
        },
    }


def _job_status_schema() -> dict[str, Any]:
    nullable_number = {"type": ["number", "null"]}
    states = [state.value for state in JobState]
    return {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": states},
            "state": {"enum": states, "deprecated": True, "description": "the same as `status`; goes in a release"},
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
            "nsfw_content_detected": {"type": "array", "items": {"type": "boolean"}},
            "error": {"type": ["string", "null"]},
            "track_id": {"type": "string"},
            "links": {"type": "object"},
            "webhook": {"type": "object", "description": "the webhook deliveries of the job, if it has a webhook"},
        },
        "required": ["id", "status", "state", "seq", "created_at", "outputs", "links"],
    }


_ENDPOINT_ID = {
    "name": "endpoint_id", "in": "path", "required": True, "schema": {"type": "string"},
    "description": "any name; one that names a configured model selects that model for requests naming none",
}
_RUNPOD_SCHEMAS: dict[str, dict[str, Any]] = {
    "RunPodRequest": {
        "type": "object",
        "properties": {
            "input": {
                "type": "object",
                "description": "one of three shapes: RunPod's public image endpoints (prompt, negative_prompt, width, "
                "height, num_inference_steps, guidance, seed, num_images, output_format, init_image, mask_image, "
                "strength), the A1111 worker's txt2img or img2img payload, or its {api: {method, endpoint}, "
                "payload} for sdapi/v1/txt2img or sdapi/v1/img2img; each may carry track_id (a string), echoed in "
                "webhooks. Input images are base64 or http(s) URLs; the echoed input carries {stored: key} "
                "in their place",
            },
            "webhook": {"type": "string", "format": "uri"},
            "policy": {
                "type": "object",
                "properties": {
                    "executionTimeout": {"type": "number", "exclusiveMinimum": 0,
                                         "maximum": MAX_EXECUTION_TIMEOUT_S * 1000,
                                         "description": "ms; at most EASEL_JOB_TIMEOUT_S too"},
                    "ttl": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TTL_S * 1000,
                            "description": "ms, from submission, queue included"},
                    "lowPriority": {"type": "boolean", "description": "accepted; changes nothing in Easel"},
                },
                "additionalProperties": False,
            },
        },
        "required": ["input"],
    },
    "RunPodStream": {
        "type": "object",
        "properties": {
            "status": {"enum": [state.value for state in JobState]},
            "stream": {"type": "array", "items": {"type": "object", "properties": {"output": {}}}},
        },
        "required": ["status", "stream"],
    },
    "RunPodStatus": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": [state.value for state in JobState]},
            "delayTime": {"type": "integer"},
            "executionTime": {"type": "integer"},
            "workerId": {"type": "string"},
            "output": {},
            "error": {"type": ["string", "null"]},
        },
        "required": ["id", "status"],
    },
}


def _runpod_paths() -> dict[str, Any]:
    """RunPod's serverless operations, under /v2/{endpoint_id}."""
    request = {"$ref": "#/components/schemas/RunPodRequest"}
    body = {"required": True, "content": {"application/json": {"schema": request}}}
    job_id = [_ENDPOINT_ID, _JOB_ID]

    def operation(
        summary: str, answer: str, parameters: list[dict[str, Any]], schema: str = "RunPodStatus", **extra: Any
    ) -> dict[str, Any]:
        content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
        responses = {"200": {"description": answer, "content": content}, **_errors("/v2/")}
        return {"summary": summary, "security": _AUTH, "parameters": parameters, "responses": responses, **extra}

    wait = {"name": "wait", "in": "query", "description": "ms to wait for the result (90000 when absent)",
            "schema": {"type": "integer", "minimum": 1000, "maximum": 300000}}
    counts = {"type": "object", "additionalProperties": {"type": "integer"}}
    return {
        "/v2/{endpoint_id}/run": {"post": operation("Queue a job", "{id, status}", [_ENDPOINT_ID], requestBody=body)},
        "/v2/{endpoint_id}/runsync": {"post": operation(
            "Run a job and wait for it (then poll /status if it did not finish)", "the status envelope",
            [_ENDPOINT_ID, wait], requestBody=body,
        )},
        "/v2/{endpoint_id}/status/{job_id}": {
            method: operation("The job's status envelope", "the status envelope", job_id) for method in ("get", "post")
        },
        "/v2/{endpoint_id}/stream/{job_id}": {
            method: operation("The job's progress or output, as stream chunks", "{status, stream}", job_id,
                              schema="RunPodStream")
            for method in ("get", "post")
        },
        "/v2/{endpoint_id}/cancel/{job_id}": {"post": operation(
            "Cancel: a queued job ends CANCELLED at once, a running one at its next step", "{id, status}", job_id
        )},
        "/v2/{endpoint_id}/retry/{job_id}": {"post": operation(
            "Queue a FAILED or TIMED_OUT job again, same id and input", "{id, status}", job_id
        )},
        "/v2/{endpoint_id}/purge-queue": {"post": {
            "summary": "End every queued job of the key CANCELLED", "security": _AUTH, "parameters": [_ENDPOINT_ID],
            "responses": {"200": {"description": "how many were removed", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"removed": {"type": "integer"}, "status": {"const": "completed"}},
                "required": ["removed", "status"],
            }}}}, **_errors("/v2/")},
        }},
        "/v2/{endpoint_id}/health": {"get": {
            "summary": "The key's job counts, and the runners: idle and running", "security": _AUTH,
            "parameters": [_ENDPOINT_ID],
            "responses": {"200": {"description": "counts", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"jobs": counts, "workers": counts}, "required": ["jobs", "workers"],
            }}}}, **_errors("/v2/")},
        }},
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)
