"""Bad input gets a 4xx that names the field and the rule; nothing a client sends reaches Kafka."""

from __future__ import annotations

import httpx
import pytest

from contract.settings import Settings
from service.requests import image_body_bytes
from tests.processes import Stack

BASE = {"prompt": "a red fox", "width": 128, "height": 128, "steps": 2}


def error_of(response: httpx.Response) -> dict[str, object]:
    error = response.json()["error"]
    assert set(error) >= {"code", "message"}
    assert "Traceback" not in response.text
    return error


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        ({"width": 130}, "width", "multiple of 8"),
        ({"height": 4096}, "height", "less than or equal to 2048"),
        ({"width": 32}, "width", "greater than or equal to 64"),
        ({"width": "wide"}, "width", "valid integer"),
        ({"steps": 0}, "steps", "greater than or equal to 1"),
        ({"steps": 1000}, "steps", "less than or equal to 150"),
        ({"prompt": "x" * 4001}, "prompt", "at most 4000 characters"),
        ({"prompt": None}, "prompt", "valid string"),
        ({"guidance": -1}, "guidance", "greater than or equal to 0"),
        ({"num_images": 9}, "num_images", "less than or equal to 4"),
        ({"seed": 2**40}, "seed", "less than or equal to"),
        ({"sampler": "Warp Drive"}, "sampler", "must be one of: Euler, Euler a"),
        ({"sampler": "DDIM", "schedule": "karras"}, "body", "not available with sampler"),
        ({"output_format": "gif"}, "output_format", "'png', 'jpeg' or 'webp'"),
        ({"colour": "blue"}, "colour", "is not a known field"),
        ({"model": "sd15"}, "model", "must be one of: default"),
        ({"webhook": "not a url"}, "webhook.url", "valid URL"),
    ],
)
def test_invalid_fields_are_422_naming_field_and_rule(
    client: httpx.Client, change: dict[str, object], field: str, rule: str
) -> None:
    response = client.post("/v1/jobs", json={**BASE, **change})
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["field"] == field
    assert rule in str(error["message"]), error


def test_missing_prompt_is_required(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json={"width": 64})
    assert response.status_code == 422
    assert error_of(response)["message"] == "prompt: is required"


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b"\xff\xfe"])
def test_malformed_json_is_400(client: httpx.Client, raw: bytes) -> None:
    response = client.post("/v1/jobs", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert error_of(response)["field"] == "body"


def test_oversized_body_is_413(client: httpx.Client, settings: Settings) -> None:
    # /v1/jobs takes input images: its cap is two of them as base64 plus 1 MiB (service/requests.py).
    response = client.post("/v1/jobs", json={**BASE, "prompt": "x" * image_body_bytes(settings)})
    assert response.status_code == 413


def test_missing_and_wrong_keys_are_401(stack: Stack) -> None:
    missing = httpx.post(f"{stack.base_url}/v1/jobs", json=BASE)
    assert missing.status_code == 401
    assert error_of(missing)["field"] == "key"
    wrong = httpx.post(f"{stack.base_url}/v1/jobs", json=BASE, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert error_of(wrong)["message"] == "invalid API key"


def test_unknown_job_and_route_are_404(client: httpx.Client) -> None:
    assert error_of(client.get("/v1/jobs/does-not-exist"))["code"] == "not_found"
    assert client.get("/v1/jobs/does-not-exist/images/0").status_code == 404
    assert client.get("/v2/nothing").status_code == 404


def test_bad_wait_parameter_is_400(client: httpx.Client) -> None:
    response = client.get("/v1/jobs/x", params={"wait": "soon"})
    assert response.status_code == 400
    assert error_of(response)["field"] == "wait"
