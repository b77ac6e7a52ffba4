"""LoRAs through a whole stack: the stock `webuiapi` client lists them and names them in prompts, the native API
names them in `loras`, ModelsLab in `lora_model`; the runner applies them; unknown names are refused before queueing."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import webuiapi
from PIL import Image

from contract.topics import Topics
from easel.local_kafka import LocalKafka
from gpu_runner.tiny_lora import save_tiny_lora
from tests.kafka_io import requested_job
from tests.processes import HOME, Stack, make_stack
from tests.webui_client import webui_client

pytestmark = pytest.mark.slow

SMALL = {"width": 64, "height": 64, "steps": 4, "seed": 11}


@pytest.fixture(scope="module")
def lora_stack(kafka: LocalKafka, tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("loras")
    save_tiny_lora(folder, "ink")
    save_tiny_lora(folder, "paper", seed=1)
    stack = make_stack(kafka.bootstrap, tmp_path_factory.mktemp("lora-stack"), "loras", HOME)
    stack.env["EASEL_LORA_DIR"] = str(folder)
    with stack.serving() as serving:
        yield serving


@pytest.fixture
def a1111(lora_stack: Stack) -> Iterator[webuiapi.WebUIApi]:
    with webui_client(lora_stack) as client:
        yield client


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def native_image(stack: Stack, body: dict[str, object]) -> Image.Image:
    headers = {"Authorization": f"Bearer {stack.key}"}
    with httpx.Client(base_url=stack.base_url, headers=headers, timeout=120) as client:
        job = client.post("/v1/jobs", json=body)
        assert job.status_code == 202, job.text
        status = client.get(f"/v1/jobs/{job.json()['id']}", params={"wait": 60}).json()
        assert status["status"] == "COMPLETED", status
        image = client.get(status["outputs"][0]["url"])
    return Image.open(io.BytesIO(image.content))


def test_a_prompt_tag_applies_the_lora_as_native_loras_do(lora_stack: Stack, a1111: webuiapi.WebUIApi) -> None:
    assert [entry["name"] for entry in a1111.get_loras()] == ["ink", "paper"]
    plain = a1111.txt2img(prompt="a lighthouse", **SMALL).image
    tagged = a1111.txt2img(prompt="a lighthouse <lora:ink:1>", **SMALL).image
    assert np.abs(pixels(plain) - pixels(tagged)).mean() > 2  # the tiny LoRA visibly changes the image
    explicit = native_image(lora_stack, {"prompt": "a lighthouse ", "loras": [{"name": "ink"}], **SMALL})
    in_prompt = native_image(lora_stack, {"prompt": "a lighthouse <lora:ink:1>", **SMALL})
    # The tag leaves its spaces, as A1111's does; a batch may differ from a lone job by a few levels.
    assert np.abs(pixels(explicit) - pixels(in_prompt)).max() <= 3


def test_an_unknown_lora_is_refused_before_queueing_in_each_dialect(lora_stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {lora_stack.key}"}
    with httpx.Client(base_url=lora_stack.base_url, headers=headers, timeout=60) as client:
        native = client.post("/v1/jobs", json={"prompt": "x", "loras": [{"name": "nope"}], **SMALL})
        assert native.status_code == 422
        error = native.json()["error"]
        assert error["field"] == "loras" and "available: ink, paper" in error["message"]

        a1111 = client.post("/sdapi/v1/txt2img", json={"prompt": "x <lora:nope:0.5>", **SMALL})
        assert a1111.status_code == 422, a1111.text
        assert "nope" in a1111.text and "loras" in a1111.text

        modelslab = client.post(
            "/api/v6/realtime/text2img",
            json={"key": lora_stack.key, "prompt": "x", "lora_model": "nope", "width": 64, "height": 64},
        )
        assert modelslab.json()["status"] == "error" and "nope" in modelslab.text


def test_modelslab_lora_model_runs_the_lora(lora_stack: Stack) -> None:
    body = {"key": lora_stack.key, "prompt": "a lighthouse", "width": 64, "height": 64, "samples": 1,
            "num_inference_steps": 4, "seed": 11, "base64": True}
    with httpx.Client(base_url=lora_stack.base_url, timeout=120) as client:
        answers = [
            client.post("/api/v6/realtime/text2img", json=body | extra).json()
            for extra in ({}, {"lora_model": "ink", "lora_strength": "1"})
        ]
    plain, with_lora = (Image.open(io.BytesIO(base64.b64decode(a["output"][0]))) for a in answers)
    assert with_lora.size == (64, 64)
    assert np.abs(pixels(plain) - pixels(with_lora)).mean() > 2


@pytest.mark.parametrize(("sent", "loras"), [
    ({"lora_model": "ink, paper", "lora_strength": "0.6,0.8"}, [("ink", 0.6), ("paper", 0.8)]),
    ({"lora_model": "ink,paper", "lora_strength": 0.5}, [("ink", 0.5), ("paper", 0.5)]),
    ({"lora_model": "ink"}, [("ink", 1.0)]),
])
async def test_modelslab_lora_fields_become_the_jobs_loras(
    lora_stack: Stack, sent: dict[str, Any], loras: list[tuple[str, float]]
) -> None:
    answer = httpx.post(f"{lora_stack.base_url}/api/v6/realtime/text2img", json={
        "key": lora_stack.key, "prompt": "x", "width": 64, "height": 64, "num_inference_steps": 1,
        "instant_response": True, **sent})
    assert answer.status_code == 200 and answer.json()["status"] == "processing", answer.text
    job_id = str(answer.json()["id"])
    job = await requested_job(
        lora_stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(lora_stack.prefix).requests, lambda job: job["id"] == job_id
    )
    assert [(lora["name"], lora["weight"]) for lora in job["loras"]] == loras
