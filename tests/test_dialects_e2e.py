"""Each dialect end to end through Kafka and the runner, with the seed documents' examples verbatim."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from easel.local_kafka import LocalKafka
from tests.processes import Stack
from tests.sdxl_named_stack import SEED_001_PAYLOAD, sdxl_named_stack

SMALL = {"width": 64, "height": 64}


def png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def cancel_natively(stack: Stack, job_id: str) -> None:
    """Seed examples ask for 1024 px, which takes a minute on a CPU: check the answer, then stop the job."""
    headers = {"Authorization": f"Bearer {stack.key}"}
    httpx.post(f"{stack.base_url}/v1/jobs/{job_id}/cancel", headers=headers)
    done = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", params={"wait": 60}, headers=headers, timeout=70).json()
    assert done["state"] in ("CANCELLED", "COMPLETED")


def poll_modelslab(stack: Stack, fetch_url: str) -> dict[str, object]:
    deadline = time.monotonic() + 90
    while (fetched := httpx.post(fetch_url, json={"key": stack.key}).json())["status"] != "success":
        assert fetched["status"] == "processing" and time.monotonic() < deadline, fetched
        time.sleep(0.2)
    return fetched


# --- ModelsLab (seed 002) -------------------------------------------------------------------------


def test_modelslab_seed_example_verbatim_succeeds_with_public_urls(stack: Stack) -> None:
    body = {
        "key": stack.key,
        "prompt": "ultra realistic close up portrait ((beautiful pale cyberpunk female with heavy black eyeliner))",
        "negative_prompt": "bad quality",
        "width": "512",
        "height": "512",
        "safety_checker": False,
        "seed": None,
        "samples": 1,
        "base64": False,
        "webhook": None,
        "track_id": None,
    }
    answer = httpx.post(f"{stack.base_url}/api/v6/realtime/text2img", json=body, timeout=60).json()
    if answer["status"] == "processing":  # not done within the response window (a busy machine): poll, as clients do
        answer = poll_modelslab(stack, answer["fetch_result"])
    assert answer["status"] == "success", answer
    assert isinstance(answer["id"], int)
    assert set(answer) >= {"generationTime", "output", "proxy_links", "meta", "nsfw_content_detected"}
    assert answer["meta"]["width"] == 512 and isinstance(answer["meta"]["seed"], int)
    image = httpx.get(answer["output"][0])  # no key: ModelsLab clients download outputs directly
    assert image.status_code == 200 and png_size(image.content) == (512, 512)

    fetched = httpx.post(f"{stack.base_url}/api/v6/realtime/fetch/{answer['id']}", json={"key": stack.key}).json()
    assert fetched["status"] == "success" and fetched["output"] == answer["output"]


def test_modelslab_instant_response_gives_future_links_that_404_until_ready(stack: Stack) -> None:
    body = {"key": stack.key, "prompt": "a fox", **SMALL, "instant_response": True, "num_inference_steps": 30}
    answer = httpx.post(f"{stack.base_url}/api/v6/realtime/text2img", json=body).json()
    assert answer["status"] == "processing"
    assert set(answer) >= {"eta", "fetch_result", "future_links", "id", "meta", "tip", "message", "output"}
    future = answer["future_links"][0]
    assert httpx.get(future).status_code == 404
    poll_modelslab(stack, answer["fetch_result"])
    assert httpx.get(future).status_code == 200


def test_modelslab_base64_output(stack: Stack) -> None:
    body = {"key": stack.key, "prompt": "a fox", **SMALL, "base64": True, "samples": 2}
    answer = httpx.post(f"{stack.base_url}/api/v6/realtime/text2img", json=body, timeout=60).json()
    assert answer["status"] == "success"
    assert [png_size(base64.b64decode(b)) for b in answer["output"]] == [(64, 64), (64, 64)]


def test_modelslab_errors_are_in_its_format(stack: Stack) -> None:
    url = f"{stack.base_url}/api/v6/realtime/text2img"
    bad_key = httpx.post(url, json={"key": "nope", "prompt": "x"})
    assert (bad_key.status_code, bad_key.json()) == (401, {"status": "error", "message": "Invalid API key"})
    too_many = httpx.post(url, json={"key": stack.key, "prompt": "x", "samples": 9})
    assert (too_many.status_code, too_many.json()["message"]) == (400, "samples must be between 1 and 4")
    unknown = httpx.post(f"{stack.base_url}/api/v6/realtime/fetch/424242", json={"key": stack.key})
    assert unknown.status_code == 404 and unknown.json()["status"] == "error"


# --- RunPod (seeds 001 and 003) -------------------------------------------------------------------


def test_runpod_public_endpoint_seed_example_is_queued(stack: Stack) -> None:
    seed_003 = {
        "input": {
            "prompt": "A serene mountain landscape at sunset",
            "width": 1024,
            "height": 1024,
            "num_inference_steps": 20,
            "guidance": 7.5,
        }
    }
    headers = {"Authorization": f"Bearer {stack.key}"}
    answer = httpx.post(f"{stack.base_url}/v2/black-forest-labs-flux-1-dev/run", json=seed_003, headers=headers).json()
    assert answer["status"] == "IN_QUEUE" and set(answer) == {"id", "status"}
    # An idle runner may already have started it: then it stops at its next step, which at 1024² on a busy CPU can
    # take longer than /cancel waits (2.5 s, under the stock client's 3 s), so the answer may still say IN_PROGRESS.
    cancel = httpx.post(f"{stack.base_url}/v2/any/cancel/{answer['id']}", headers=headers).json()
    assert cancel["id"] == answer["id"] and cancel["status"] in {"CANCELLED", "IN_PROGRESS"}, cancel
    deadline = time.monotonic() + 120
    while (status := httpx.get(f"{stack.base_url}/v2/any/status/{answer['id']}", headers=headers).json())[
        "status"
    ] != "CANCELLED" and time.monotonic() < deadline:
        assert status["status"] in {"IN_QUEUE", "IN_PROGRESS"}, status
        time.sleep(0.5)
    assert status["status"] == "CANCELLED", status


def test_runpod_runsync_public_shape_answers_the_envelope_with_image_url(stack: Stack) -> None:
    body = {
        "input": {"prompt": "A serene mountain landscape at sunset", **SMALL, "num_inference_steps": 4, "guidance": 7.5}
    }
    answer = httpx.post(
        f"{stack.base_url}/v2/ep/runsync", json=body, headers={"Authorization": stack.key}, timeout=100
    ).json()  # a bare key, as some RunPod examples send it
    assert answer["status"] == "COMPLETED", answer
    assert answer["id"].startswith("sync-")
    assert isinstance(answer["delayTime"], int) and isinstance(answer["executionTime"], int)
    assert answer["output"]["cost"] == 0
    assert png_size(httpx.get(answer["output"]["image_url"]).content) == (64, 64)

    status = httpx.get(
        f"{stack.base_url}/v2/ep/status/{answer['id']}", headers={"Authorization": f"Bearer {stack.key}"}
    )
    assert status.json()["output"] == answer["output"]


def test_runpod_a1111_worker_shape_answers_images_parameters_and_info(stack: Stack) -> None:
    body = {
        "input": {
            "api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"},
            "payload": {
                "prompt": "an astronaut riding a horse",
                "seed": 1234,
                "batch_size": 2,
                "steps": 3,
                "cfg_scale": 7,
                **SMALL,
                "sampler_name": "DPM++ 2M Karras",
            },
        }
    }
    answer = httpx.post(
        f"{stack.base_url}/v2/ep/runsync", json=body, headers={"Authorization": f"Bearer {stack.key}"}, timeout=100
    ).json()
    assert answer["status"] == "COMPLETED", answer
    output = answer["output"]
    assert [png_size(base64.b64decode(i)) for i in output["images"]] == [(64, 64), (64, 64)]
    info = json.loads(output["info"])
    assert info["all_seeds"] == [1234, 1235] and info["sampler_name"] == "DPM++ 2M"
    assert output["parameters"]["sampler_name"] == "DPM++ 2M Karras"


def test_runpod_seed_001_example_verbatim_answers_the_a1111_envelope(
    kafka: LocalKafka, tiny_model: str, tmp_path: Path
) -> None:
    """On a stack serving the base as sd_xl_base_1.0 and a refiner as sd_xl_refiner_1.0, as the demo does."""
    seed_001: dict[str, Any] = {
        "input": {
            "api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"},
            "payload": SEED_001_PAYLOAD,
        }
    }
    with sdxl_named_stack(kafka.bootstrap, tmp_path, "seed-001") as stack:
        headers = {"Authorization": f"Bearer {stack.key}"}
        # Verbatim, both routes take it. At 1024² with a refiner it takes many minutes on a shared CPU: each job is
        # seen running the seed's schedule, then stopped; the envelope is checked on the same payload at 64 px.
        queued = httpx.post(f"{stack.base_url}/v2/ep/run", json=seed_001, headers=headers)
        assert queued.status_code == 200 and queued.json() == {"id": queued.json()["id"], "status": "IN_QUEUE"}
        synced = httpx.post(f"{stack.base_url}/v2/ep/runsync", params={"wait": 1000}, json=seed_001,
                            headers=headers, timeout=30).json()
        assert synced["id"].startswith("sync-") and synced["status"] in ("IN_QUEUE", "IN_PROGRESS"), synced
        deadline = time.monotonic() + 300
        while "output" not in (running := httpx.get(f"{stack.base_url}/v2/ep/status/{queued.json()['id']}",
                                                    headers=headers).json()):
            assert running["status"] in ("IN_QUEUE", "IN_PROGRESS") and time.monotonic() < deadline, running
            time.sleep(0.5)
        assert int(running["output"]["progress"].split("/")[1]) >= 30  # the base's and the refiner's steps
        for job_id in (synced["id"], queued.json()["id"]):
            cancel_natively(stack, job_id)

        smaller = {"width": 64, "height": 64, "steps": 4}
        small = {**seed_001["input"], "payload": {**seed_001["input"]["payload"], **smaller}}
        answer = httpx.post(f"{stack.base_url}/v2/ep/runsync", json={"input": small}, headers=headers,
                            timeout=100).json()
        assert answer["status"] == "COMPLETED", answer
        assert {"delayTime", "executionTime", "id", "output", "status"} <= set(answer)
        output = answer["output"]
        assert set(output) == {"images", "parameters", "info"}
        [image] = output["images"]
        assert png_size(base64.b64decode(image)) == (64, 64)
        assert output["parameters"]["refiner_checkpoint"] == "sd_xl_refiner_1.0"
        assert output["parameters"]["sampler_name"] == "DPM++ SDE" and output["parameters"]["scheduler"] == "karras"
        info = json.loads(output["info"])
        assert info["sd_model_name"] == "sd_xl_base_1.0" and info["steps"] == 4 and info["seed"] >= 0
        assert "Model: sd_xl_base_1.0, Refiner: sd_xl_refiner_1.0" in info["infotexts"][0]


def test_runpod_errors_health_and_purge(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.key}"}
    assert httpx.post(f"{stack.base_url}/v2/ep/run", json={"input": {"prompt": "x"}}).status_code == 401
    unsupported = httpx.post(
        f"{stack.base_url}/v2/ep/run",
        headers=headers,
        json={"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/extra-single-image"}, "payload": {}}},
    )
    assert unsupported.status_code == 400
    assert "supported: sdapi/v1/txt2img, sdapi/v1/img2img" in unsupported.json()["error"]
    assert httpx.get(f"{stack.base_url}/v2/ep/status/nope", headers=headers).status_code == 404
    health = httpx.get(f"{stack.base_url}/v2/ep/health", headers=headers).json()
    assert set(health["jobs"]) == {"completed", "failed", "inProgress", "inQueue", "retried"}
    assert health["jobs"]["completed"] >= 1
    assert httpx.post(f"{stack.base_url}/v2/ep/purge-queue", headers=headers).json()["status"] == "completed"


# --- AUTOMATIC1111 --------------------------------------------------------------------------------


def test_a1111_txt2img_is_synchronous_with_info_string(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.key}"}
    answer = httpx.post(
        f"{stack.base_url}/sdapi/v1/txt2img",
        headers=headers,
        timeout=100,
        json={"prompt": "a lighthouse", "steps": 3, **SMALL, "seed": 77, "sampler_name": "Euler a"},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    [image] = body["images"]
    assert png_size(base64.b64decode(image)) == (64, 64)
    info = json.loads(body["info"])
    assert info["seed"] == 77 and info["steps"] == 3 and len(info["infotexts"]) == 1
    assert body["parameters"]["cfg_scale"] == 7.0  # A1111's defaults filled in


def test_a1111_catalogues_progress_and_errors(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.key}"}
    names = [s["name"] for s in httpx.get(f"{stack.base_url}/sdapi/v1/samplers", headers=headers).json()]
    assert "DPM++ 2M" in names and "Euler a" in names
    assert {s["name"] for s in httpx.get(f"{stack.base_url}/sdapi/v1/schedulers", headers=headers).json()} >= {"karras"}
    assert httpx.get(f"{stack.base_url}/sdapi/v1/sd-models", headers=headers).json()[0]["model_name"] == "default"
    progress = httpx.get(f"{stack.base_url}/sdapi/v1/progress", headers=headers).json()
    assert set(progress) >= {"progress", "eta_relative", "state", "current_image", "textinfo"}
    assert set(progress["state"]) >= {"sampling_step", "sampling_steps", "interrupted"}
    unknown = httpx.post(
        f"{stack.base_url}/sdapi/v1/txt2img", headers=headers, json={"prompt": "x", "sampler_name": "Warp"}
    )
    assert unknown.status_code == 404 and unknown.json()["detail"].startswith("Sampler not found")
    bad = httpx.post(f"{stack.base_url}/sdapi/v1/txt2img", headers=headers, json={"prompt": "x", "width": 100})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "width"]
    assert httpx.post(f"{stack.base_url}/sdapi/v1/interrupt", headers=headers).json() == {}


# --- Skidio (seed 000) ----------------------------------------------------------------------------


def test_skidio_seed_example_async_answers_a_job_id_and_status_works(stack: Stack) -> None:
    seed_000 = {"input": {"api_key": stack.key}, "prompt": "your-image-prompt"}
    answer = httpx.post(f"{stack.base_url}/api/txt2img/async", json=seed_000)
    assert answer.status_code == 202
    job_id = answer.json()["job_id"]
    status = httpx.post(
        f"{stack.base_url}/api/txt2img/status", json={"input": {"api_key": stack.key, "job_id": job_id}}
    )
    assert status.json()["status"] in ("IN_QUEUE", "IN_PROGRESS")
    by_query = httpx.get(f"{stack.base_url}/api/txt2img/status", params={"api_key": stack.key, "job_id": job_id})
    assert by_query.json()["job_id"] == job_id
    cancel_natively(stack, job_id)


def test_skidio_sync_answers_with_the_image(stack: Stack) -> None:
    body = {"input": {"api_key": stack.key}, "prompt": "a fox", **SMALL, "steps": 3, "seed": 42}
    answer = httpx.post(f"{stack.base_url}/api/txt2img", json=body, timeout=100)
    assert answer.status_code == 200 and answer.json()["seeds"] == [42]
    assert png_size(base64.b64decode(answer.json()["images"][0])) == (64, 64)
    bad = httpx.post(f"{stack.base_url}/api/txt2img", json={"input": {"api_key": "nope"}, "prompt": "x"})
    assert bad.status_code == 401 and bad.json()["error"].startswith("input.api_key")


def test_openapi_describes_every_dialect_route(stack: Stack) -> None:
    paths = httpx.get(f"{stack.base_url}/openapi.json").json()["paths"]
    assert {
        "/api/v6/realtime/text2img",
        "/api/v6/realtime/fetch/{job_id}",
        "/v2/{endpoint_id}/runsync",
        "/v2/{endpoint_id}/status/{job_id}",
        "/sdapi/v1/txt2img",
        "/sdapi/v1/progress",
        "/api/txt2img",
        "/api/txt2img/status",
        "/files/{job_id}/{index}",
    } <= set(paths)
    assert set(paths["/v2/{endpoint_id}/status/{job_id}"]) == {"get", "post"}


def test_dialect_webhooks_are_vetted_at_submit(stack: Stack) -> None:
    modelslab = httpx.post(
        f"{stack.base_url}/api/v6/realtime/text2img",
        json={"key": stack.key, "prompt": "x", "webhook": "http://169.254.169.254/latest", "track_id": "t1"},
    )
    assert modelslab.status_code == 400 and modelslab.json()["status"] == "error"
    assert "not allowed" in modelslab.json()["message"]
    runpod = httpx.post(
        f"{stack.base_url}/v2/ep/run",
        headers={"Authorization": f"Bearer {stack.key}"},
        json={"input": {"prompt": "x"}, "webhook": "http://10.0.0.1/hook"},
    )
    assert runpod.status_code == 400 and runpod.json()["error"].startswith("webhook: not allowed")


def test_a1111_bad_types_are_422_and_the_key_is_not_echoed(stack: Stack) -> None:
    url = f"{stack.base_url}/sdapi/v1/txt2img"
    for payload, field in (
        ({"override_settings": "sdxl"}, "override_settings"),
        ({"sampler_name": 5}, "sampler_name"),
        ({"scheduler": ["karras"]}, "scheduler"),
    ):
        answer = httpx.post(url, json={"key": stack.key, "prompt": "x", **payload})
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["loc"] == ["body", field]
    ok = httpx.post(url, json={"key": stack.key, "prompt": "x", "steps": 2, **SMALL}, timeout=100).json()
    assert "key" not in ok["parameters"] and stack.key not in json.dumps(ok)


def test_files_refuse_foreign_tokens_with_404(stack: Stack) -> None:
    for token in ("nope", "ü" * 32, ""):
        assert httpx.get(f"{stack.base_url}/files/some-job/0", params={"token": token}).status_code == 404


def test_a1111_progress_shows_the_running_jobs_preview(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.key}"}
    job_id = httpx.post(
        f"{stack.base_url}/v1/jobs",
        headers=headers,
        json={"prompt": "x", "width": 256, "height": 256, "steps": 150, "preview": True},
    ).json()["id"]
    deadline = time.monotonic() + 60
    while (progress := httpx.get(f"{stack.base_url}/sdapi/v1/progress", headers=headers).json())[
        "current_image"
    ] is None:
        assert time.monotonic() < deadline, progress
        time.sleep(0.2)
    assert progress["state"]["job"] == job_id and progress["state"]["sampling_steps"] == 150
    assert png_size(base64.b64decode(progress["current_image"])) == (256, 256)  # a JPEG; PIL reads either
    skipped = httpx.get(f"{stack.base_url}/sdapi/v1/progress", params={"skip_current_image": "true"}, headers=headers)
    assert skipped.json()["current_image"] is None
    cancel_natively(stack, job_id)
