"""Images on S3 end to end: an API and a runner whose blob store is S3Proxy (a real S3 server), not a folder."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from contract.blobs_s3 import S3BlobStore
from contract.keys import key_id
from contract.serialization import encode, key
from contract.settings import Settings
from contract.states import JobState, JobStatus, Output
from contract.topics import Topics
from dialects.links import file_url
from easel.local_kafka import LocalKafka
from easel.local_s3 import LocalS3
from tests.kafka_io import Records, produce, read_topic
from tests.processes import HOME, Stack, make_stack
from tests.s3 import BUCKET, own_s3proxy

PREFIX = "e2e/images"


@pytest.fixture(scope="module")
def s3proxy() -> Iterator[LocalS3]:
    with own_s3proxy() as s3:
        yield s3


@pytest.fixture(scope="module")
def s3_stack(
    kafka: LocalKafka, tiny_model: str, s3proxy: LocalS3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    stack = make_stack(kafka.bootstrap, tmp_path_factory.mktemp("s3-stack"), "s3e2e", HOME)
    stack.env.update(s3proxy.env, EASEL_BLOB_URL=f"s3://{BUCKET}/{PREFIX}", EASEL_S3_PRESIGNED_URLS="1")
    with stack.serving() as serving:
        yield serving


def test_images_go_to_s3_and_public_links_redirect_to_presigned_urls(
    s3_stack: Stack, s3proxy: LocalS3, job_spec: dict[str, object]
) -> None:
    with httpx.Client(
        base_url=s3_stack.base_url, headers={"Authorization": f"Bearer {s3_stack.key}"}, timeout=30
    ) as client:
        job_id = client.post("/v1/jobs", json=job_spec).json()["id"]
        done = client.get(f"/v1/jobs/{job_id}", params={"wait": 60}).json()
        assert done["state"] == "COMPLETED", done
        image = client.get(done["outputs"][0]["url"])  # the key holder's link: streamed by the API
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    stored = (s3proxy.data_dir / BUCKET / PREFIX / job_id / "0.png").read_bytes()  # the object in S3
    assert stored.startswith(b"\x89PNG") and image.content == stored
    assert not (s3_stack.workdir / "blobs").exists()  # nothing went to a local folder

    public = file_url(Settings.from_env(s3_stack.env), job_id, 0)
    with httpx.Client(timeout=30) as anonymous:  # a ModelsLab/RunPod client: no key, just the signed URL
        redirect = anonymous.get(public)
        assert redirect.status_code == 307
        assert redirect.headers["location"].startswith(f"{s3proxy.endpoint_url}/{BUCKET}/{PREFIX}/{job_id}/0.png?")
        assert redirect.headers["cache-control"] == "no-store"
        presigned = anonymous.get(redirect.headers["location"])
        assert presigned.status_code == 200 and presigned.content == stored
        assert anonymous.get(public, follow_redirects=True).content == stored
        assert anonymous.get(public.replace("token=", "token=x")).status_code == 404  # still the API's check first


@pytest.fixture
def short_retention_api(
    kafka: LocalKafka, s3proxy: LocalS3, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """An API alone (the purger runs in it) on S3, keeping finished jobs 2 s."""
    stack = make_stack(kafka.bootstrap, tmp_path_factory.mktemp("s3-retention"), "s3retention", HOME)
    stack.env.update(s3proxy.env, EASEL_BLOB_URL=f"s3://{BUCKET}/retention", EASEL_RETENTION_S="2")
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()


async def test_retention_deletes_the_objects_in_s3(
    short_retention_api: Stack, s3proxy: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = short_retention_api
    for name, value in s3proxy.env.items():  # this process writes to the store too: S3Proxy's credentials
        monkeypatch.setenv(name, value)
    settings = Settings.from_env(stack.env)
    store = S3BlobStore.from_settings(settings)
    objects = s3proxy.data_dir / BUCKET / "retention"
    now = time.time()
    try:
        for job_id, finished in (("kept-job", now + 3600), ("expired-job", now - 60)):
            await store.put(f"{job_id}/0.png", b"\x89PNG not really", "image/png")
            status = JobStatus(
                job_id=job_id, owner=key_id(stack.key), state=JobState.COMPLETED, seq=3, updated_at=finished,
                created_at=finished - 1, started_at=finished - 1, finished_at=finished,
                outputs=[Output(key=f"{job_id}/0.png", content_type="image/png", width=64, height=64, seed=1)],
            )
            await produce(stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix).state, encode(status),
                          key=key(job_id))
        assert (objects / "expired-job" / "0.png").exists()
        deadline = time.monotonic() + 30
        while (objects / "expired-job" / "0.png").exists():  # the purger deletes it within a round or two
            assert time.monotonic() < deadline, "the expired job's object is still in S3"
            time.sleep(0.2)
        assert await store.get("expired-job/0.png") is None
        assert await store.get("kept-job/0.png") == b"\x89PNG not really"
    finally:
        await store.close()
    def tombstoned(records: Records) -> bool:
        return any(r.key == b"expired-job" and r.value is None for r in records)

    records = await read_topic(stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix).state, tombstoned, 30)
    assert tombstoned(records)
    headers = {"Authorization": f"Bearer {stack.key}"}
    assert httpx.get(f"{stack.base_url}/v1/jobs/expired-job", headers=headers).status_code == 404
    assert httpx.get(f"{stack.base_url}/v1/jobs/kept-job", headers=headers).status_code == 200
