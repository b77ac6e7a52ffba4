"""Every dialect answers every error in its own shape: 400, 401, 404, 405, 413, 422, 429, 500 and 503.

The 4xx run against the session's stack; 429 and 500 against an in-process app on the same broker (no runner,
so jobs stay queued); 503 against an in-process app whose Kafka is unreachable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from contract.settings import Settings
from dialects import a1111, modelslab, native, runpod, skidio
from easel.local_kafka import LocalKafka
from service import create_app
from service.app import ROUTES
from service.errors import error_answer_for
from service.requests import image_body_bytes
from tests.conftest import HOME
from tests.processes import Stack, free_port, make_stack

Body = Any
Check = Callable[[Body], bool]
HUGE = {"prompt": "x" * (2 << 20)}  # over the 1 MiB cap
# Over the cap of the routes that take input images (native, RunPod): two images as base64 plus 1 MiB.
HUGER = {"prompt": "x" * image_body_bytes(Settings())}
PREFIXES = {"native": "/v1", "modelslab": "/api/v6", "runpod": "/v2/ep", "a1111": "/sdapi/v1", "skidio": "/api/txt2img"}


def native_shape(code: str) -> Check:
    return lambda body: set(body) == {"error"} and body["error"]["code"] == code and "message" in body["error"]


def native_any(body: Body) -> bool:
    return set(body) == {"error"} and {"code", "message"} <= set(body["error"])


def modelslab_shape(body: Body) -> bool:
    return body["status"] == "error" and isinstance(body["message"], str) and set(body) <= {"status", "message",
                                                                                                 "retry_after"}


def message_shape(body: Body) -> bool:
    """RunPod's and Easel's Skidio shape: `{"error": "<message>"}`."""
    return set(body) == {"error"} and isinstance(body["error"], str)


def a1111_exception(body: Body) -> bool:
    """What A1111's own exception handler answers (`str(e)` of an HTTPException is "<status>: <detail>")."""
    return set(body) == {"error", "detail", "body", "errors"} and body["error"] == "HTTPException"


def a1111_validation(body: Body) -> bool:
    """FastAPI's 422."""
    return set(body) == {"detail"} and all({"loc", "msg", "type"} <= set(d) for d in body["detail"])


@dataclass
class Case:
    dialect: str
    method: str
    path: str
    status: int
    check: Check
    json: Any = None
    content: bytes | None = None
    key: str = "header"  # "header": a valid Bearer key; "none": no key; in the body otherwise (the test fills it)
    extra: dict[str, Any] = field(default_factory=dict)

    def send(self, client: httpx.Client, api_key: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {api_key}"} if self.key == "header" else {}
        if self.content is not None:
            headers["content-type"] = "application/json"
        body = _with_key(self.json, api_key) if self.key == "body" else self.json
        return client.request(self.method, self.path, json=body, content=self.content, headers=headers)


def _with_key(value: Any, api_key: str) -> Any:
    """`"$KEY"` anywhere in the body becomes the stack's key."""
    if isinstance(value, dict):
        return {k: _with_key(v, api_key) for k, v in value.items()}
    return api_key if value == "$KEY" else value


CLIENT_ERRORS = {
    # --- native ---------------------------------------------------------------------------------------------------
    "native-400": Case("native", "POST", "/v1/jobs", 400, native_shape("malformed_json"), content=b"{not json"),
    "native-401": Case("native", "POST", "/v1/jobs", 401, native_shape("unauthorized"), json={"prompt": "x"},
                       key="none"),
    "native-404-job": Case("native", "GET", "/v1/jobs/nope", 404, native_shape("not_found")),
    "native-404-path": Case("native", "GET", "/v1/nothing", 404, native_shape("not_found")),
    "native-405": Case("native", "DELETE", "/v1/jobs", 405, native_shape("method_not_allowed")),
    "native-413": Case("native", "POST", "/v1/jobs", 413, native_shape("too_large"), json=HUGER),
    "native-422": Case("native", "POST", "/v1/jobs", 422,
                       lambda b: native_shape("invalid_request")(b) and b["error"]["field"] == "width",
                       json={"prompt": "x", "width": 130}),
    # --- ModelsLab: 400 for what is a 422 elsewhere, the key in the body -----------------------------------------
    "modelslab-400": Case("modelslab", "POST", "/api/v6/realtime/text2img", 400, modelslab_shape,
                          content=b"{not json", key="none"),
    "modelslab-401": Case("modelslab", "POST", "/api/v6/realtime/text2img", 401,
                          lambda b: b == {"status": "error", "message": "Invalid API key"},
                          json={"key": "nope", "prompt": "x"}, key="none"),
    "modelslab-404-job": Case("modelslab", "POST", "/api/v6/realtime/fetch/424242", 404, modelslab_shape,
                              json={"key": "$KEY"}, key="body"),
    "modelslab-404-path": Case("modelslab", "POST", "/api/v6/nothing", 404, modelslab_shape, json={"key": "$KEY"},
                               key="body"),
    "modelslab-405": Case("modelslab", "GET", "/api/v6/realtime/text2img", 405, modelslab_shape, key="none"),
    "modelslab-413": Case("modelslab", "POST", "/api/v6/realtime/text2img", 413, modelslab_shape, json=HUGE,
                          key="none"),
    "modelslab-422": Case("modelslab", "POST", "/api/v6/realtime/text2img", 400,
                          lambda b: b == {"status": "error", "message": "samples must be between 1 and 4"},
                          json={"key": "$KEY", "prompt": "x", "samples": 9}, key="body"),
    "modelslab-422-contract": Case(
        "modelslab", "POST", "/api/v6/realtime/text2img", 400,
        lambda b: modelslab_shape(b) and b["message"].startswith("num_inference_steps: "),
        json={"key": "$KEY", "prompt": "x", "num_inference_steps": 1000}, key="body"),
    # --- RunPod: {"error": msg}, 400 for what is a 422 elsewhere --------------------------------------------------
    "runpod-400": Case("runpod", "POST", "/v2/ep/run", 400, message_shape, content=b"{not json"),
    "runpod-401": Case("runpod", "POST", "/v2/ep/run", 401, message_shape, json={"input": {"prompt": "x"}},
                       key="none"),
    "runpod-404-job": Case("runpod", "GET", "/v2/ep/status/nope", 404, message_shape),
    "runpod-404-path": Case("runpod", "GET", "/v2/ep/nothing", 404, message_shape),
    "runpod-405": Case("runpod", "DELETE", "/v2/ep/run", 405, message_shape),
    "runpod-413": Case("runpod", "POST", "/v2/ep/run", 413, message_shape, json=HUGER),
    "runpod-422": Case("runpod", "POST", "/v2/ep/run", 400,
                       lambda b: message_shape(b) and b["error"].startswith("input.num_inference_steps: "),
                       json={"input": {"prompt": "x", "num_inference_steps": 1000}}),
    # --- AUTOMATIC1111: FastAPI's shapes, and A1111's own exception handler's -------------------------------------
    "a1111-400": Case("a1111", "POST", "/sdapi/v1/txt2img", 422,
                      lambda b: a1111_validation(b) and b["detail"][0]["type"] == "json_invalid",
                      content=b"{not json"),
    "a1111-401": Case("a1111", "POST", "/sdapi/v1/txt2img", 401,
                      lambda b: a1111_exception(b) and b["errors"].startswith("401: "), json={"prompt": "x"},
                      key="none"),
    "a1111-404-sampler": Case("a1111", "POST", "/sdapi/v1/txt2img", 404,
                              lambda b: a1111_exception(b) and b["detail"].startswith("Sampler not found"),
                              json={"prompt": "x", "sampler_name": "Warp"}),
    "a1111-404-path": Case("a1111", "GET", "/sdapi/v1/nothing", 404, lambda b: b == {"detail": "Not Found"}),
    "a1111-405": Case("a1111", "GET", "/sdapi/v1/txt2img", 405, lambda b: b == {"detail": "Method Not Allowed"}),
    "a1111-413": Case("a1111", "POST", "/sdapi/v1/txt2img", 413, a1111_exception, json=HUGE),
    "a1111-422": Case("a1111", "POST", "/sdapi/v1/txt2img", 422,
                      lambda b: a1111_validation(b) and b["detail"][0]["loc"] == ["body", "cfg_scale"],
                      json={"prompt": "x", "cfg_scale": -1}),
    # --- Skidio: {"error": "<field>: <rule>"}, the key in input.api_key ------------------------------------------
    "skidio-400": Case("skidio", "POST", "/api/txt2img/async", 400,
                       lambda b: message_shape(b) and b["error"].startswith("body: "), content=b"{not json",
                       key="none"),
    "skidio-401": Case("skidio", "POST", "/api/txt2img/async", 401,
                       lambda b: b == {"error": "input.api_key: invalid API key"},
                       json={"input": {"api_key": "nope"}, "prompt": "x"}, key="none"),
    "skidio-404-job": Case("skidio", "POST", "/api/txt2img/status", 404,
                           lambda b: message_shape(b) and b["error"].startswith("input.job_id: "),
                           json={"input": {"api_key": "$KEY", "job_id": "nope"}}, key="body"),
    "skidio-404-path": Case("skidio", "GET", "/api/txt2img/nothing", 404, message_shape, key="none"),
    "skidio-405": Case("skidio", "GET", "/api/txt2img", 405, message_shape, key="none"),
    "skidio-413": Case("skidio", "POST", "/api/txt2img/async", 413, message_shape, json=HUGE, key="none"),
    "skidio-422": Case("skidio", "POST", "/api/txt2img/async", 400,
                       lambda b: message_shape(b) and b["error"].startswith("batch_size: "),
                       json={"input": {"api_key": "$KEY"}, "prompt": "x", "batch_size": 9}, key="body"),
}


@pytest.mark.parametrize("case", list(CLIENT_ERRORS.values()), ids=list(CLIENT_ERRORS))
def test_client_errors_are_in_the_dialects_shape(stack: Stack, case: Case) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        response = case.send(client, stack.key)
    assert response.status_code == case.status, response.text
    assert case.check(response.json()), response.text
    assert "Traceback" not in response.text
    if case.status == 405:
        assert "POST" in response.headers["allow"]


def test_each_routes_errors_are_rendered_in_its_modules_dialect() -> None:
    by_module = {"service.modelslab_api": modelslab.error_answer, "service.runpod_api": runpod.error_answer,
                 "service.a1111_api": a1111.error_answer, "service.loras_api": a1111.error_answer,
                 "service.skidio_api": skidio.error_answer}
    for route in ROUTES:
        assert isinstance(route, Route | WebSocketRoute)
        expected = by_module.get(route.endpoint.__module__, native.error_answer)
        assert error_answer_for(route.path) is expected, route.path


# --- in-process apps: 429 and 500 on the real broker, 503 without one -------------------------------------------

def _settings(bootstrap: str, workdir: Path, prefix: str, **env: str) -> tuple[Settings, str]:
    stack = make_stack(bootstrap, workdir, prefix, HOME)
    return Settings.from_env({**stack.env, **env}), stack.key


async def _boom(request: Request) -> Response:
    raise RuntimeError("secret internal detail")


@pytest.fixture(scope="module")
def limited(kafka: LocalKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    """No runner and one queued job per key; a route that fails unexpectedly under each dialect's prefix."""
    settings, key = _settings(kafka.bootstrap, tmp_path_factory.mktemp("limited"), "errors-limited",
                              EASEL_MAX_QUEUED_PER_KEY="1")
    app = create_app(settings)
    for prefix in PREFIXES.values():
        app.add_route(f"{prefix}/boom", _boom, methods=["GET"])
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        queued = client.post("/v1/jobs", json={"prompt": "x"}, headers={"Authorization": f"Bearer {key}"})
        assert queued.status_code == 202, queued.text
        yield client, key


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    settings, key = _settings(f"127.0.0.1:{free_port()}", tmp_path_factory.mktemp("unreachable"), "errors-down")
    with TestClient(create_app(settings)) as client:  # starts after waiting for Kafka in vain
        assert client.get("/health").status_code == 503
        yield client, key


SUBMITS = {
    "native": Case("native", "POST", "/v1/jobs", 0, native_any, json={"prompt": "x"}),
    "modelslab": Case("modelslab", "POST", "/api/v6/realtime/text2img", 0, modelslab_shape,
                      json={"key": "$KEY", "prompt": "x"}, key="body"),
    "runpod": Case("runpod", "POST", "/v2/ep/run", 0, message_shape, json={"input": {"prompt": "x"}}),
    "a1111": Case("a1111", "POST", "/sdapi/v1/txt2img", 0, a1111_exception, json={"prompt": "x"}),
    "skidio": Case("skidio", "POST", "/api/txt2img/async", 0, message_shape,
                   json={"input": {"api_key": "$KEY"}, "prompt": "x"}, key="body"),
}


@pytest.mark.parametrize("dialect", SUBMITS)
def test_a_full_queue_is_429_in_the_dialects_shape(limited: tuple[TestClient, str], dialect: str) -> None:
    client, key = limited
    response = SUBMITS[dialect].send(client, key)
    assert response.status_code == 429, response.text
    body = response.json()
    assert SUBMITS[dialect].check(body), response.text
    assert "Maximum 1 queued" in response.text
    assert response.headers["retry-after"] == "30"
    if dialect == "modelslab":
        assert body["retry_after"] == 30
    if dialect == "native":
        assert body["error"]["code"] == "queue_full"


@pytest.mark.parametrize("dialect", SUBMITS)
def test_kafka_unavailable_is_503_in_the_dialects_shape(unreachable: tuple[TestClient, str], dialect: str) -> None:
    client, key = unreachable
    response = SUBMITS[dialect].send(client, key)
    assert response.status_code == 503, response.text
    assert SUBMITS[dialect].check(response.json()), response.text
    assert "Kafka" in response.text
    if dialect == "native":
        assert response.json()["error"]["code"] == "kafka_unavailable"
    assert response.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    ("dialect", "check"),
    [
        ("native", native_shape("internal")),
        ("modelslab", lambda b: b == {"status": "error", "message": "internal error"}),
        ("runpod", lambda b: b == {"error": "internal error"}),
        ("a1111", lambda b: set(b) == {"error", "detail", "body", "errors"} and b["detail"] == "internal error"),
        ("skidio", lambda b: b == {"error": "internal error"}),
    ],
)
def test_an_unexpected_error_is_a_500_in_the_dialects_shape_logged_once(
    limited: tuple[TestClient, str], dialect: str, check: Check
) -> None:
    client, _ = limited
    with capture_logs() as logs:
        response = client.get(f"{PREFIXES[dialect]}/boom")
    assert response.status_code == 500
    assert check(response.json()), response.text
    assert "secret" not in response.text and "Traceback" not in response.text
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(errors) == 1 and errors[0]["exc_info"] is True, logs
