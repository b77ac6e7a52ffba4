"""The official `runpod` Python client, unchanged, pointed at Easel (it reads RUNPOD_ENDPOINT_BASE_URL)."""

from __future__ import annotations

import base64
import io
import json

import pytest
import runpod
from PIL import Image

from tests.processes import Stack

INPUT = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "num_inference_steps": 3, "guidance": 7.5}


@pytest.fixture
def runpod_endpoint(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> runpod.Endpoint:
    # What a user does: set the base URL and the key; the client builds /v2/{endpoint}/... itself.
    monkeypatch.setattr(runpod, "endpoint_url_base", f"{stack.base_url}/v2")
    monkeypatch.setattr(runpod, "api_key", stack.key)
    return runpod.Endpoint("easel-sdxl")


def test_run_sync_returns_the_output(runpod_endpoint: runpod.Endpoint) -> None:
    output = runpod_endpoint.run_sync(INPUT, timeout=120)
    assert output["cost"] == 0 and output["image_url"].startswith("http")


def test_run_then_status_and_output(runpod_endpoint: runpod.Endpoint) -> None:
    a1111_input = {"prompt": "an astronaut riding a horse", "steps": 3, "width": 64, "height": 64, "seed": 5}
    job = runpod_endpoint.run(a1111_input)
    assert job.status() in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    output = job.output(timeout=120)
    assert json.loads(output["info"])["seed"] == 5
    assert Image.open(io.BytesIO(base64.b64decode(output["images"][0]))).size == (64, 64)
    assert job.status() == "COMPLETED"


def test_cancel_and_health(runpod_endpoint: runpod.Endpoint) -> None:
    job = runpod_endpoint.run({**INPUT, "width": 512, "height": 512, "num_inference_steps": 150})
    assert job.cancel()["status"] == "CANCELLED"
    assert job.status() == "CANCELLED"
    health = runpod_endpoint.health()
    assert health["jobs"]["completed"] >= 1
    assert set(health["workers"]) == {"idle", "running"}
