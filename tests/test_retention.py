"""Retention: after EASEL_RETENTION_S a finished job is purged from every view, its images and its state.

A stack with a 3 s retention (its purger looks every 0.75 s): finished jobs of every dialect shrink back out
of `jobs_known`, the job list and RunPod's /health; their images leave the blob folder; the state topic
carries their tombstones; every dialect answers their status with its not-found; a restarted API does not
bring them back. A queued job outlives any retention.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from PIL import Image

from contract.keys import key_id
from contract.serialization import encode, key
from contract.states import JobState, JobStatus, Output
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from tests.kafka_io import Records, produce, read_topic
from tests.processes import HOME, EaselProcess, Stack, make_stack, wait_for_health

RETENTION_S = 3
SMALL = {"width": 64, "height": 64}
PURGE_WAIT_S = 90.0


@pytest.fixture(scope="module")
def short_lived(kafka: LocalKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An API whose finished jobs live 3 s. The runner starts only when a test asks for `runner`."""
    stack = make_stack(kafka.bootstrap, tmp_path_factory.mktemp("retention"), "retention", HOME)
    stack.env |= {"EASEL_RETENTION_S": str(RETENTION_S)}
    try:  # stopped even when starting fails, so no process outlives the test
        stack.start_api()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def runner(short_lived: Stack, tiny_model: str) -> EaselProcess:
    process = short_lived.start_runner()
    process.wait_for_output("runner ready")
    return process


def headers(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.key}"}


def blobs(stack: Stack) -> Path:
    return Path(stack.env["EASEL_BLOB_URL"])


def jobs_known(stack: Stack) -> int:
    known: int = httpx.get(f"{stack.base_url}/health").json()["jobs_known"]
    return known


def tombstoned(records: Records) -> set[str]:
    return {r.key.decode() for r in records if r.key is not None and r.value is None}


async def state_records(stack: Stack, until: Any) -> Records:
    return await read_topic(stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix).state, until)


async def test_a_queued_job_outlives_the_retention(short_lived: Stack) -> None:
    stack = short_lived
    queued = httpx.post(f"{stack.base_url}/v1/jobs", json={"prompt": "wait", **SMALL}, headers=headers(stack))
    queued_id = queued.json()["id"]
    time.sleep(RETENTION_S + 0.5)  # the queued job is now older than the retention
    # A finished job, written long ago, as a marker: once its tombstone is on the topic, a purge ran since.
    marker = JobStatus(
        job_id="marker-job", owner=key_id(stack.key), state=JobState.COMPLETED, seq=3, updated_at=1.0,
        created_at=1.0, finished_at=1.0,
        outputs=[Output(key="marker-job/0.png", content_type="image/png", width=64, height=64, seed=1)],
    )
    blobs(stack).joinpath("marker-job").mkdir(parents=True, exist_ok=True)
    blobs(stack).joinpath("marker-job", "0.png").write_bytes(b"\x89PNG not really")
    await produce(stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix).state, encode(marker), key(marker.job_id))

    records = await state_records(stack, lambda rs: "marker-job" in tombstoned(rs))
    assert queued_id not in tombstoned(records)
    assert not blobs(stack).joinpath("marker-job").exists()
    status = httpx.get(f"{stack.base_url}/v1/jobs/{queued_id}", headers=headers(stack))
    assert status.status_code == 200 and status.json()["state"] == "IN_QUEUE"
    assert jobs_known(stack) >= 1


def submit_in_every_dialect(stack: Stack) -> list[str]:
    """One job through each dialect's submit; their ids (A1111's sync route names none: it is waited for)."""
    base, auth = stack.base_url, headers(stack)
    native = httpx.post(f"{base}/v1/jobs", json={"prompt": "native", **SMALL, "steps": 2}, headers=auth).json()["id"]
    runpod = httpx.post(f"{base}/v2/ep/run", headers=auth,
                        json={"input": {"prompt": "runpod", **SMALL, "num_inference_steps": 2}}).json()["id"]
    wrapped = httpx.post(f"{base}/v2/ep/run", headers=auth, json={"input": {
        "api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"},
        "payload": {"prompt": "a1111 wrapped", **SMALL, "steps": 2}}}).json()["id"]
    modelslab = httpx.post(f"{base}/api/v6/realtime/text2img", json={
        "key": stack.key, "prompt": "modelslab", **SMALL, "num_inference_steps": 2, "instant_response": True,
    }).json()["id"]
    skidio = httpx.post(f"{base}/api/txt2img/async",
                        json={"input": {"api_key": stack.key}, "prompt": "skidio", **SMALL}).json()["job_id"]
    a1111 = httpx.post(f"{base}/sdapi/v1/txt2img", json={"prompt": "a1111", **SMALL, "steps": 2}, headers=auth,
                       timeout=120)
    assert a1111.status_code == 200 and a1111.json()["images"]
    return [native, runpod, wrapped, str(modelslab), skidio]


def wait_until(condition: Any, what: str, timeout_s: float = PURGE_WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def assert_gone_in_every_dialect(stack: Stack, job_ids: list[str]) -> None:
    base, auth = stack.base_url, headers(stack)
    native_id, runpod_id, wrapped_id, modelslab_id, skidio_id = job_ids
    for job_id in job_ids:
        native = httpx.get(f"{base}/v1/jobs/{job_id}", headers=auth)
        assert native.status_code == 404 and native.json()["error"]["code"] == "not_found"
    image = httpx.get(f"{base}/v1/jobs/{native_id}/images/0", headers=auth)
    assert image.status_code == 404 and image.json()["error"]["code"] == "not_found"
    for job_id in (runpod_id, wrapped_id):
        runpod = httpx.get(f"{base}/v2/ep/status/{job_id}", headers=auth)
        assert runpod.status_code == 404 and set(runpod.json()) == {"error"}
    modelslab = httpx.post(f"{base}/api/v6/realtime/fetch/{modelslab_id}", json={"key": stack.key})
    assert modelslab.status_code == 404 and modelslab.json()["status"] == "error"
    skidio = httpx.post(f"{base}/api/txt2img/status", json={"input": {"api_key": stack.key, "job_id": skidio_id}})
    assert skidio.status_code == 404 and skidio.json()["error"].startswith("input.job_id: ")
    # The key's views: nothing left to list, count or report as current.
    assert httpx.get(f"{base}/v1/jobs", headers=auth).json()["jobs"] == []
    counts = httpx.get(f"{base}/v2/ep/health", headers=auth).json()["jobs"]
    assert counts == {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0}
    progress = httpx.get(f"{base}/sdapi/v1/progress", headers=auth).json()
    assert progress["state"]["job"] == "" and progress["state"]["job_timestamp"] == "0"


@pytest.mark.slow
async def test_finished_jobs_of_every_dialect_are_purged_everywhere(short_lived: Stack, runner: EaselProcess) -> None:
    stack = short_lived
    job_ids = submit_in_every_dialect(stack)
    for job_id in job_ids:
        done = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", params={"wait": 60}, headers=headers(stack), timeout=70)
        # Waited on while retained, or already purged (a busy machine): never anything but finished.
        assert done.status_code == 404 or done.json()["state"] == "COMPLETED", done.text

    wait_until(lambda: jobs_known(stack) == 0, "jobs_known did not fall to 0")
    records = await state_records(stack, lambda rs: set(job_ids) <= tombstoned(rs))
    written = [orjson.loads(r.value) for r in records if r.value is not None and r.key.decode() in job_ids]
    image_keys = {output["key"] for status in written for output in status.get("outputs", [])}
    assert {image_key.split("/")[0] for image_key in image_keys} == set(job_ids)  # each had its image stored
    assert not any(blobs(stack).joinpath(image_key).exists() for image_key in image_keys)
    assert not any(blobs(stack).joinpath(job_id).exists() for job_id in job_ids)
    assert [path for path in blobs(stack).rglob("*") if path.is_file()] == []  # the A1111 job's image too
    assert_gone_in_every_dialect(stack, job_ids)

    # A restart replays the topic: the purged jobs stay purged.
    api = stack.processes[0]
    api.stop()
    stack.processes.remove(api)
    restarted = EaselProcess("api", stack.env, stack.workdir / "api-restarted.log")
    stack.processes.append(restarted)
    wait_for_health(stack.base_url, restarted)
    assert jobs_known(stack) == 0
    assert_gone_in_every_dialect(stack, job_ids)


@pytest.mark.slow
def test_a_purged_img2img_job_takes_its_input_images_with_it(short_lived: Stack, runner: EaselProcess) -> None:
    stack = short_lived
    image = Image.new("RGB", (64, 64), (90, 20, 20))
    mask = Image.new("L", (64, 64), 255)
    encoded = [base64.b64encode(_png(picture)).decode() for picture in (image, mask)]
    job_id = httpx.post(f"{stack.base_url}/v1/jobs", headers=headers(stack), json={
        "prompt": "inputs", **SMALL, "steps": 2, "init_image": encoded[0], "mask_image": encoded[1],
    }).json()["id"]
    stored = [blobs(stack) / job_id / name for name in ("init.png", "mask.png")]
    assert all(path.exists() for path in stored)
    wait_until(lambda: httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", headers=headers(stack)).status_code == 404,
               "the img2img job was not purged")
    wait_until(lambda: not blobs(stack).joinpath(job_id).exists(), "its folder, input images included, stayed")


def _png(picture: Image.Image) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()
