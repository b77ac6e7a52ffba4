"""img2img and inpainting intake in every dialect: the images checked and stored as PNG under the job's keys, the
keys (never the bytes) in the job on Kafka and in what a dialect echoes."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import httpx
import orjson
from PIL import Image

from contract.topics import Topics
from tests.img2img_inputs import b64, image_server, mask_png, png
from tests.kafka_io import requested_job
from tests.processes import Stack

SMALL = {"width": 64, "height": 64}


def auth(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.key}"}


async def job_record(stack: Stack, job_id: str) -> dict[str, Any]:
    """The job as the API wrote it to the requests topic."""
    return await requested_job(stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix).requests,
                               lambda job: job["id"] == job_id)


async def job_by_prompt(stack: Stack, prompt: str) -> dict[str, Any]:
    """The one job with this prompt (A1111's synchronous answer names no job id)."""
    return await requested_job(stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix).requests,
                               lambda job: job["prompt"] == prompt)


def stored(stack: Stack, key: str) -> Image.Image:
    path: Path = stack.workdir / "blobs" / key
    image = Image.open(path, formats=["PNG"])
    image.load()
    return image


def wait_done(stack: Stack, job_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", params={"wait": 60}, headers=auth(stack), timeout=70)
    status: dict[str, Any] = answer.json()
    return status


async def test_native_base64_init_and_mask_are_stored_and_the_job_carries_their_keys(stack: Stack) -> None:
    body = {"prompt": "a red square", **SMALL, "steps": 4, "seed": 3, "init_image": b64(png(64, 64)),
            "mask_image": "data:image/png;base64," + b64(mask_png(64, 64)), "strength": 0.5, "mask_crop_padding": 8}
    answer = httpx.post(f"{stack.base_url}/v1/jobs", json=body, headers=auth(stack))
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    job = await job_record(stack, job_id)
    assert job["init_image"] == f"{job_id}/init.png" and job["mask_image"] == f"{job_id}/mask.png"
    assert job["strength"] == 0.5 and job["mask_crop_padding"] == 8 and job["mask_blur"] == 4
    assert stored(stack, job["init_image"]).getpixel((0, 0)) == (200, 40, 40)
    mask = stored(stack, job["mask_image"])
    assert mask.size == (64, 64) and mask.getpixel((0, 0)) == 0 and mask.getpixel((63, 0)) == 255
    assert wait_done(stack, job_id)["status"] == "COMPLETED"


async def test_native_init_image_by_url_from_an_allowed_network(stack: Stack) -> None:
    # The session stack allows 127.0.0.0/8 (EASEL_WEBHOOK_ALLOW_NETWORKS), as an operator would a private CDN.
    with image_server({"init.png": png(80, 48, (10, 200, 30))}) as base:
        answer = httpx.post(f"{stack.base_url}/v1/jobs", headers=auth(stack),
                            json={"prompt": "x", **SMALL, "steps": 2, "init_image": f"{base}/init.png"})
    assert answer.status_code == 202, answer.text
    job = await job_record(stack, answer.json()["id"])
    image = stored(stack, job["init_image"])
    assert image.size == (80, 48) and image.getpixel((5, 5)) == (10, 200, 30)


async def test_a1111_img2img_inpainting_answers_as_a1111_and_stores_the_inverted_mask(stack: Stack) -> None:
    payload = {"prompt": "a lake", **SMALL, "steps": 4, "seed": 11, "init_images": [b64(png(64, 64))],
               "mask": b64(mask_png(64, 64)), "denoising_strength": 0.6, "inpainting_fill": 1,
               "inpainting_mask_invert": 1, "inpaint_full_res": False}
    answer = httpx.post(f"{stack.base_url}/sdapi/v1/img2img", json=payload, headers=auth(stack), timeout=120)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["images"]) == 1
    # As A1111: the input images are not sent back (nor their stored markers).
    assert body["parameters"]["init_images"] is None and body["parameters"]["mask"] is None
    assert body["parameters"]["denoising_strength"] == 0.6
    info = json.loads(body["info"])
    assert info["denoising_strength"] == 0.6 and info["extra_generation_params"]["Mask blur"] == 4
    assert "Denoising strength: 0.6" in info["infotexts"][0] and "Mask blur: 4" in info["infotexts"][0]
    job = await job_by_prompt(stack, "a lake")
    job_id = job["id"]
    assert job.get("mask_crop_padding") is None and job["strength"] == 0.6
    assert job["client_input"]["init_images"] == [{"stored": f"{job_id}/init.png"}]
    assert job["client_input"]["mask"] == {"stored": f"{job_id}/mask.png"}
    mask = stored(stack, job["mask_image"])
    assert mask.getpixel((0, 0)) == 255 and mask.getpixel((63, 0)) == 0  # inverted on intake


async def test_a1111_fill_paints_the_masked_part_of_the_stored_init_image(stack: Stack) -> None:
    init = Image.new("RGB", (64, 64), (0, 0, 255))
    init.paste((255, 0, 0), (32, 0, 64, 64))  # red where the mask repaints
    out = io.BytesIO()
    init.save(out, format="PNG")
    payload = {"prompt": "fill me", **SMALL, "steps": 2, "init_images": [b64(out.getvalue())],
               "mask": b64(mask_png(64, 64)), "inpainting_fill": 0}
    answer = httpx.post(f"{stack.base_url}/sdapi/v1/img2img", json=payload, headers=auth(stack), timeout=120)
    assert answer.status_code == 200, answer.text
    filled = stored(stack, (await job_by_prompt(stack, "fill me"))["init_image"])
    assert filled.getpixel((0, 0)) == (0, 0, 255)  # kept as sent
    pixel = filled.getpixel((60, 32))  # filled from around it: the blue, none of the red
    assert isinstance(pixel, tuple) and pixel[0] < 10 and pixel[2] > 200


async def test_modelslab_img2img_and_inpaint_through_the_stock_sdk(stack: Stack) -> None:
    from modelslab_py.core.apis.realtime import Realtime
    from modelslab_py.core.client import Client
    from modelslab_py.schemas.realtime import RealtimeImage2ImageSchema, RealtimeInpaintingSchema

    client = Client(api_key=stack.key, fetch_retry=120, fetch_timeout=1)
    client.base_url = f"{stack.base_url}/api/"
    realtime = Realtime(client=client)
    with image_server({"init.png": png(64, 64)}) as base, contextlib.redirect_stdout(io.StringIO()):
        answers = [
            realtime.image_to_image(RealtimeImage2ImageSchema(
                prompt="a boat", init_image=f"{base}/init.png", strength=0.7, width=64, height=64,
                num_inference_steps=4)),
            realtime.inpainting(RealtimeInpaintingSchema(
                prompt="a boat", init_image=b64(png(64, 64)), mask_image=b64(mask_png(64, 64)), width=64,
                height=64, num_inference_steps=4)),
        ]
    for answer in answers:
        if answer["status"] == "processing":
            answer = realtime.fetch(str(answer["id"]))
        assert answer["status"] == "success", answer
        job = await job_record(stack, str(answer["id"]))
        assert job["init_image"] == f"{answer['id']}/init.png"
        assert job["client_input"]["init_image"] == {"stored": job["init_image"]}
        assert Image.open(io.BytesIO(httpx.get(answer["output"][0]).content)).size == (64, 64)
    inpainted = await job_record(stack, str(answers[1]["id"]))
    assert inpainted["mask_image"] == f"{answers[1]['id']}/mask.png" and inpainted["strength"] == 0.75


async def test_runpod_a1111_worker_img2img_and_public_shape(stack: Stack) -> None:
    image = b64(png(64, 64))
    wrapped = {"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
                         "payload": {"prompt": "a hill", **SMALL, "steps": 4, "init_images": [image],
                                     "mask": b64(mask_png(64, 64)), "inpainting_fill": 1}}}
    answer = httpx.post(f"{stack.base_url}/v2/ep/runsync", json=wrapped, headers=auth(stack), timeout=120)
    assert answer.status_code == 200 and answer.json()["status"] == "COMPLETED", answer.text
    output = answer.json()["output"]
    assert len(output["images"]) == 1 and output["parameters"]["init_images"] is None
    assert json.loads(output["info"])["denoising_strength"] == 0.75
    job_id = answer.json()["id"]
    job = await job_record(stack, job_id)
    # The echo carries markers, not images: small on Kafka, far under the echo cap.
    assert job["client_input"]["payload"]["init_images"] == [{"stored": f"{job_id}/init.png"}]
    assert job["client_input"]["payload"]["mask"] == {"stored": f"{job_id}/mask.png"}
    assert job["mask_crop_padding"] == 0  # A1111's inpaint_full_res (true by default) with padding 0

    public = httpx.post(f"{stack.base_url}/v2/ep/run", headers=auth(stack), json={"input": {
        "prompt": "a hill", **SMALL, "num_inference_steps": 5, "init_image": image, "strength": 0.4}})
    assert public.status_code == 200, public.text
    job = await job_record(stack, public.json()["id"])
    assert job["init_image"] == f"{job['id']}/init.png" and job["strength"] == 0.4
    assert job["client_input"]["init_image"] == {"stored": job["init_image"]}
    assert len(orjson.dumps(job)) < 4096
