"""Refiner, configured models, safety checker and PNG infotext end to end: HTTP → Kafka → runner → HTTP.

A stack of its own runs with a tiny refiner and a tiny checker that flags every image it sees; the
session stack (neither configured) shows the refusals.
"""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from contract.events import EventType
from contract.keys import key_id
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from gpu_runner.tiny_checker import save_tiny_checker
from gpu_runner.tiny_model import save_tiny_refiner
from tests.conftest import HOME
from tests.kafka_io import job_events, produce
from tests.processes import Stack, make_stack

JOB = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "steps": 4, "seed": 11}


@pytest.fixture(scope="module")
def features_stack(kafka: LocalKafka, tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("features")
    stack = make_stack(kafka.bootstrap, workdir, "features", HOME)
    stack.env |= {
        "EASEL_MODEL_NAME": "sdxl-base",
        "EASEL_REFINER": str(save_tiny_refiner(workdir / "refiner")),
        "EASEL_REFINER_NAME": "sdxl-refiner",
        "EASEL_SAFETY_CHECKER": str(save_tiny_checker(workdir / "checker", flag_everything=True)),
    }
    with stack.serving("features-runner") as serving:
        yield serving


@pytest.fixture
def features(features_stack: Stack) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {features_stack.key}"}
    with httpx.Client(base_url=features_stack.base_url, headers=headers, timeout=60) as client:
        yield client


def finished(client: httpx.Client, job_id: str) -> dict[str, object]:
    body = client.get(f"/v1/jobs/{job_id}", params={"wait": 60}).json()
    assert body["state"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"), body
    return body


def image_of(client: httpx.Client, output: dict[str, object]) -> Image.Image:
    response = client.get(str(output["url"]))
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content))


async def test_a_refiner_job_counts_steps_across_base_and_refiner(
    features: httpx.Client, features_stack: Stack
) -> None:
    submitted = features.post("/v1/jobs", json={**JOB, "refiner": "sdxl-refiner", "refiner_switch_at": 0.5})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    events = await job_events(features_stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(features_stack.prefix).events, job_id)
    assert events[-1].type is EventType.COMPLETED, events[-1]
    progress = [(e.data["step"], e.data["total"]) for e in events if e.type is EventType.PROGRESS]
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]  # Euler: the base's 2 steps, then the refiner's 2

    done = finished(features, job_id)
    [output] = done["outputs"]  # type: ignore[misc]
    parameters = image_of(features, output).text["parameters"]  # type: ignore[attr-defined]
    assert parameters.startswith("a lighthouse at dusk\nSteps: 4, Sampler: Euler, ")
    assert "Seed: 11, Size: 64x64, Model: sdxl-base, Refiner: sdxl-refiner, Refiner switch at: 0.5" in parameters


def test_the_safety_checker_blacks_out_flagged_images_and_says_so(features: httpx.Client) -> None:
    checked = features.post("/v1/jobs", json={**JOB, "num_images": 2, "safety_checker": True}).json()
    unchecked = features.post("/v1/jobs", json={**JOB, "model": "sdxl-base"}).json()

    done = finished(features, checked["id"])
    assert done["state"] == "COMPLETED", done
    assert done["nsfw_content_detected"] == [True, True]
    for output in done["outputs"]:  # type: ignore[attr-defined]
        image = image_of(features, output)
        assert image.size == (64, 64) and image.convert("RGB").getextrema() == ((0, 0),) * 3
        assert "parameters" in image.text  # type: ignore[attr-defined]

    plain = finished(features, unchecked["id"])
    assert plain["nsfw_content_detected"] == [False]
    assert image_of(features, plain["outputs"][0]).convert("RGB").getextrema() != ((0, 0),) * 3  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"refiner": "sd_xl_refiner_1.0"}, "refiner: must be one of: sdxl-refiner"),
        ({"model": "sd15"}, "model: must be one of: sdxl-base, default"),
    ],
)
def test_native_refuses_unconfigured_names_listing_the_configured(
    features: httpx.Client, change: dict[str, object], message: str
) -> None:
    answer = features.post("/v1/jobs", json={**JOB, **change})
    assert answer.status_code == 422
    assert answer.json()["error"]["message"] == message


def test_a1111_selects_the_configured_checkpoint_and_refiner(features: httpx.Client) -> None:
    payload = {
        "prompt": "a red fox",
        "steps": 4,
        "width": 64,
        "height": 64,
        "seed": 5,
        "override_settings": {"sd_model_checkpoint": "sdxl-base"},
        "refiner_checkpoint": "sdxl-refiner",
        "refiner_switch_at": 0.5,
    }
    answer = features.post("/sdapi/v1/txt2img", json=payload)
    assert answer.status_code == 200, answer.text
    [image_b64] = answer.json()["images"]
    [infotext] = json.loads(answer.json()["info"])["infotexts"]
    assert "Refiner: sdxl-refiner, Refiner switch at: 0.5" in infotext
    parameters = Image.open(io.BytesIO(base64.b64decode(image_b64))).text["parameters"]  # type: ignore[attr-defined]
    assert "Seed: 5" in parameters and "Model: sdxl-base, Refiner: sdxl-refiner" in parameters

    unknown = features.post("/sdapi/v1/txt2img", json={**payload, "refiner_checkpoint": "sd_xl_refiner_1.0"})
    assert unknown.status_code == 422
    [detail] = unknown.json()["detail"]
    assert detail["loc"] == ["body", "refiner_checkpoint"] and detail["msg"] == "must be one of: sdxl-refiner"
    model = features.post("/sdapi/v1/txt2img", json={**payload, "override_settings": {"sd_model_checkpoint": "x"}})
    assert model.status_code == 422 and "sdxl-base, default" in model.text


async def test_the_runner_checks_names_of_jobs_written_straight_to_kafka(
    features: httpx.Client, features_stack: Stack
) -> None:
    job_id = f"direct-{uuid.uuid4().hex[:8]}"
    job = {"id": job_id, "owner": key_id(features_stack.key), **JOB, "refiner": "not-configured"}
    bootstrap, topics = features_stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(features_stack.prefix)
    await produce(bootstrap, topics.requests, job, key=job_id.encode())
    terminal = (await job_events(bootstrap, topics.events, job_id))[-1]
    assert terminal.type is EventType.FAILED
    assert terminal.data["error"] == "unknown refiner 'not-configured'; must be one of: sdxl-refiner"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"refiner": "refiner"}, "refiner: no refiner is configured"),
        ({"safety_checker": True}, "safety_checker: no safety checker is configured on this server; send false"),
    ],
)
def test_without_refiner_or_checker_asking_for_them_is_a_422(
    client: httpx.Client, change: dict[str, object], message: str
) -> None:
    answer = client.post("/v1/jobs", json={**JOB, **change})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert (error["message"], error["field"]) == (message, next(iter(change)))


def test_png_outputs_of_the_default_stack_carry_the_infotext(client: httpx.Client) -> None:
    done = finished(client, client.post("/v1/jobs", json=JOB).json()["id"])
    [output] = done["outputs"]  # type: ignore[misc]
    parameters = image_of(client, output).text["parameters"]  # type: ignore[attr-defined]
    assert parameters == (
        "a lighthouse at dusk\nSteps: 4, Sampler: Euler, Schedule type: Automatic, CFG scale: 5.0, "
        "Seed: 11, Size: 64x64, Model: default, Version: easel"
    )
