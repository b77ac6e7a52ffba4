"""The OpenAPI document: valid, complete (every route, every path parameter, bodies, error answers per dialect),
with the contract's constraints; and the native API's strict types."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.core.result import Ok
from starlette.routing import Route

from contract.job import JobSpec
from contract.samplers import SAMPLERS
from service.app import ROUTES
from service.openapi import build_spec
from tests.processes import Stack

SPEC = build_spec(ROUTES)
METHODS = ("get", "post", "put", "delete", "patch")


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, operation) for path, item in SPEC["paths"].items()
            for method, operation in item.items() if method in METHODS]


def test_the_document_loads_and_every_operation_is_valid() -> None:
    results = list(schemathesis.openapi.from_dict(SPEC).get_all_operations())
    assert results and all(isinstance(result, Ok) for result in results)


def test_every_http_route_is_listed_with_each_method() -> None:
    for route in ROUTES:
        if not isinstance(route, Route):
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in (route.methods or set()) - {"HEAD"}:
            assert method.lower() in SPEC["paths"][path], f"{method} {path}"
    assert "get" in SPEC["paths"]["/v1/jobs"] and "post" in SPEC["paths"]["/v1/jobs"]


def test_every_path_parameter_is_declared() -> None:
    for path, method, operation in _operations():
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"\{(\w+)\}", path)), f"{method} {path}"


BODIES = ("/v1/jobs", "/v2/{endpoint_id}/run", "/v2/{endpoint_id}/runsync", "/api/v6/realtime/text2img",
          "/api/v6/realtime/fetch/{job_id}", "/sdapi/v1/txt2img", "/api/txt2img", "/api/txt2img/async")


def test_every_body_and_every_keyed_routes_error_answers_are_documented() -> None:
    for path in BODIES:
        assert "requestBody" in SPEC["paths"][path]["post"], path
    for path, method, operation in _operations():
        if "security" in operation:
            assert "401" in operation["responses"], f"{method} {path}"
            assert "503" in operation["responses"], f"{method} {path}"


@pytest.mark.parametrize(
    ("path", "schema"),
    [("/v1/jobs", "Error"), ("/v2/{endpoint_id}/run", "RunPodError"), ("/api/v6/realtime/text2img", "ModelsLabError"),
     ("/sdapi/v1/txt2img", "A1111Error"), ("/api/txt2img", "SkidioError")],
)
def test_errors_are_in_each_dialects_shape(path: str, schema: str) -> None:
    answer = SPEC["paths"][path]["post"]["responses"]["401"]
    assert answer["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{schema}"}


def test_the_request_schema_carries_the_contracts_constraints() -> None:
    properties = SPEC["components"]["schemas"]["JobRequest"]["properties"]
    assert properties["width"]["multipleOf"] == properties["height"]["multipleOf"] == 8
    assert (properties["width"]["minimum"], properties["width"]["maximum"]) == (64, 2048)
    assert properties["sampler"]["enum"] == list(SAMPLERS)
    assert (properties["steps"]["minimum"], properties["steps"]["maximum"]) == (1, 150)


def test_an_empty_prompt_is_valid_in_the_contract() -> None:
    assert JobSpec(prompt="").prompt == ""


@pytest.mark.parametrize(
    ("change", "field"),
    [({"steps": True}, "steps"), ({"width": "64"}, "width"), ({"preview": "yes"}, "preview"),
     ({"guidance": "5"}, "guidance"), ({"seed": 1.5}, "seed")],
)
def test_native_types_are_strict(stack: Stack, change: dict[str, object], field: str) -> None:
    response = httpx.post(f"{stack.base_url}/v1/jobs", json={"prompt": "x", "width": 64, "height": 64, **change},
                          headers={"Authorization": f"Bearer {stack.key}"}, timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_a_native_execution_timeout_over_the_runners_is_refused(stack: Stack) -> None:
    response = httpx.post(f"{stack.base_url}/v1/jobs", json={"prompt": "x", "execution_timeout_s": 601},
                          headers={"Authorization": f"Bearer {stack.key}"}, timeout=30)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "execution_timeout_s"
    assert "EASEL_JOB_TIMEOUT_S" in response.json()["error"]["message"]
