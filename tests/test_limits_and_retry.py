"""Per-key queue limits (429 in every dialect), retention (jobs and their images), and RunPod's /retry."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from contract.blobs import LocalBlobStore
from contract.keys import key_id
from contract.serialization import encode, key
from contract.states import JobState, JobStatus, Output
from contract.topics import Topics
from easel.local_kafka import LocalKafka
from tests.kafka_io import produce
from tests.processes import HOME, Stack, make_stack

JOB = {"prompt": "a fox", "width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def limited_stack(kafka: LocalKafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """An API with no runner (jobs stay queued), one queued job per key, and 1 s of retention."""
    stack = make_stack(kafka.bootstrap, tmp_path_factory.mktemp("limited"), "limited", HOME)
    stack.env |= {"EASEL_MAX_QUEUED_PER_KEY": "1", "EASEL_RETENTION_S": "1"}
    try:  # stopped even when starting fails, so no process outlives the test
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def test_a_key_over_its_queue_limit_gets_429_in_every_dialect(limited_stack: Stack) -> None:
    base, headers = limited_stack.base_url, {"Authorization": f"Bearer {limited_stack.key}"}
    assert httpx.post(f"{base}/v1/jobs", json=JOB, headers=headers).status_code == 202
    native = httpx.post(f"{base}/v1/jobs", json=JOB, headers=headers)
    assert native.status_code == 429 and native.json()["error"]["code"] == "queue_full"
    assert native.headers["retry-after"] == "30"
    modelslab = httpx.post(f"{base}/api/v6/realtime/text2img", json={"key": limited_stack.key, "prompt": "x"})
    assert modelslab.status_code == 429
    assert modelslab.json() == {"status": "error", "retry_after": 30,
                                "message": "Rate limit exceeded. Maximum 1 queued requests allowed."}
    runpod = httpx.post(f"{base}/v2/ep/run", json={"input": {"prompt": "x"}}, headers=headers)
    assert runpod.status_code == 429 and "Maximum 1 queued" in runpod.json()["error"]
    a1111 = httpx.post(f"{base}/sdapi/v1/txt2img", json={"prompt": "x"}, headers=headers)
    assert a1111.status_code == 429
    skidio = httpx.post(f"{base}/api/txt2img/async", json={"input": {"api_key": limited_stack.key}, "prompt": "x"})
    assert skidio.status_code == 429
    # The limit is per key: another key still gets in.
    other = {"Authorization": f"Bearer other-key-{limited_stack.prefix}"}
    assert httpx.post(f"{base}/v1/jobs", json=JOB, headers=other).status_code == 202


async def test_a_job_past_the_retention_is_gone_with_its_images(limited_stack: Stack) -> None:
    blobs = LocalBlobStore(Path(limited_stack.env["EASEL_BLOB_URL"]))
    headers = {"Authorization": f"Bearer {limited_stack.key}"}
    now = time.time()
    for job_id, finished in (("fresh-job", now + 60), ("old-job", now - 60)):
        await blobs.put(f"{job_id}/0.png", b"\x89PNG not really", "image/png")
        status = JobStatus(
            job_id=job_id, owner=key_id(limited_stack.key), state=JobState.COMPLETED, seq=3, updated_at=finished,
            created_at=finished - 1, started_at=finished - 1, finished_at=finished,
            outputs=[Output(key=f"{job_id}/0.png", content_type="image/png", width=64, height=64, seed=1)],
        )
        await produce(limited_stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(limited_stack.prefix).state,
                      encode(status), key=key(job_id))
    fresh = httpx.get(f"{limited_stack.base_url}/v1/jobs/fresh-job/images/0", headers=headers)
    assert fresh.status_code == 200
    for path in ("/v1/jobs/old-job/images/0", "/v1/jobs/old-job"):
        old = httpx.get(f"{limited_stack.base_url}{path}", headers=headers)
        assert old.status_code == 404 and old.json()["error"]["code"] == "not_found"
    deadline = time.monotonic() + 30
    while (blobs.root / "old-job").exists():  # the purger deletes its image within a round or two
        assert time.monotonic() < deadline, "the expired job's image was not deleted"
        time.sleep(0.1)
    assert (blobs.root / "fresh-job" / "0.png").exists()


def test_runpod_retry_requeues_a_timed_out_job_under_its_id(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.key}"}
    # A 1 ms ttl: the job has always waited longer than that when a runner picks it up.
    body = {"input": {"prompt": "x", "width": 64, "height": 64, "num_inference_steps": 2}, "policy": {"ttl": 1}}
    job_id = httpx.post(f"{stack.base_url}/v2/ep/run", json=body, headers=headers).json()["id"]
    first = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", params={"wait": 30}, headers=headers).json()
    assert first["state"] == "TIMED_OUT"

    retried = httpx.post(f"{stack.base_url}/v2/ep/retry/{job_id}", headers=headers).json()
    assert retried == {"id": job_id, "status": "IN_QUEUE"}
    again = httpx.get(f"{stack.base_url}/v1/jobs/{job_id}", params={"wait": 30}, headers=headers).json()
    assert again["state"] == "TIMED_OUT" and again["seq"] > first["seq"]  # ran again: same id, new events
    assert httpx.get(f"{stack.base_url}/v2/ep/health", headers=headers).json()["jobs"]["retried"] >= 1

    done = httpx.post(f"{stack.base_url}/v2/ep/runsync", json={"input": {"prompt": "x", "width": 64, "height": 64,
                      "num_inference_steps": 2}}, headers=headers, timeout=60).json()
    refused = httpx.post(f"{stack.base_url}/v2/ep/retry/{done['id']}", headers=headers)
    assert refused.status_code == 400 and "only FAILED or TIMED_OUT" in refused.json()["error"]
