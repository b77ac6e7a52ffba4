"""Browser pages on other origins may call every API route: preflights answered (Authorization and Content-Type
included), answers (errors too) carry the CORS headers. EASEL_CORS_ORIGINS narrows who may."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from contract.settings import Settings
from service.app import EXPOSED_HEADERS, ROUTES, create_app
from tests.processes import Stack

ELSEWHERE = "http://page.elsewhere.example"
# Every HTTP route with its path parameters filled in, with each method it serves.
ROUTE_CALLS = sorted(
    (method, re.sub(r"\{[^}]+\}", "1", route.path))
    for route in ROUTES
    if isinstance(route, Route)
    for method in (route.methods or set()) - {"HEAD"}
)


def preflight(method: str, headers: str = "authorization, content-type", origin: str = ELSEWHERE) -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


@pytest.mark.parametrize(("method", "path"), ROUTE_CALLS)
def test_every_route_answers_a_preflight(stack: Stack, method: str, path: str) -> None:
    answer = httpx.options(f"{stack.base_url}{path}", headers=preflight(method))
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == "*"
    assert method in answer.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed


def test_answers_and_errors_carry_the_headers(stack: Stack) -> None:
    origin = {"Origin": ELSEWHERE}
    submitted = httpx.post(f"{stack.base_url}/v1/jobs", headers={**origin, "Authorization": f"Bearer {stack.key}"},
                           json={"prompt": "x", "width": 64, "height": 64, "steps": 1})
    assert submitted.status_code == 202 and submitted.headers["access-control-allow-origin"] == "*"
    exposed = {h.strip() for h in submitted.headers["access-control-expose-headers"].split(",")}
    assert set(EXPOSED_HEADERS) <= exposed
    for answer in (
        httpx.get(f"{stack.base_url}/v1/jobs/nope", headers={**origin, "Authorization": f"Bearer {stack.key}"}),
        httpx.post(f"{stack.base_url}/api/txt2img", headers=origin, json={"prompt": "no key"}),
        httpx.get(f"{stack.base_url}/no/such/route", headers=origin),
    ):
        assert answer.status_code >= 400 and answer.headers["access-control-allow-origin"] == "*"


def test_configured_origins_only() -> None:
    app = create_app(Settings(cors_origins=("https://app.example", "http://localhost:3000")))
    client = TestClient(app)  # no lifespan: CORS answers before any route, Kafka is not needed
    allowed = client.options("/v1/jobs", headers=preflight("POST", origin="https://app.example"))
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    refused = client.options("/v1/jobs", headers=preflight("POST", origin=ELSEWHERE))
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers


def test_the_setting_reads_a_comma_separated_list() -> None:
    settings = Settings.from_env({"EASEL_CORS_ORIGINS": "https://a.example, https://b.example"})
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert Settings().cors_origins == ("*",)
