"""The blob stores against real storage: a local folder, and S3BlobStore against S3Proxy (a real S3 server)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from contract.blobs import BlobStore, LocalBlobStore, open_blob_store
from contract.blobs_s3 import S3BlobStore
from contract.settings import Settings
from easel.local_s3 import LocalS3, S3Error
from tests.s3 import BUCKET, own_s3proxy

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
NOT_OURS = ["../escape/0.png", "job/0.exe", "/job/0.png", "job/sub/0.png", "job/0.png?x=1", ""]


@pytest.fixture(scope="module")
def s3proxy() -> Iterator[LocalS3]:
    with own_s3proxy() as s3:
        yield s3


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:8]}/images"


@pytest.fixture
async def s3_store(s3proxy: LocalS3, prefix: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[S3BlobStore]:
    for name, value in s3proxy.env.items():  # botocore's own chain, as in a deployment
        monkeypatch.setenv(name, value)
    store = S3BlobStore(BUCKET, prefix, s3proxy.endpoint_url)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    s3_store: S3BlobStore = request.getfixturevalue("s3_store")
    return s3_store


async def test_put_then_get_round_trips_and_a_missing_key_is_none(store: BlobStore) -> None:
    await store.put("job-1/0.png", PNG, "image/png")
    await store.put("job-1/1.webp", b"webp", "image/webp")
    assert await store.get("job-1/0.png") == PNG
    assert await store.get("job-1/1.webp") == b"webp"
    assert await store.get("job-1/2.png") is None
    assert await store.get("job-2/0.png") is None


async def test_put_again_overwrites(store: BlobStore) -> None:
    await store.put("job-1/0.png", b"first", "image/png")
    await store.put("job-1/0.png", PNG, "image/png")  # a redelivered job writes the same key
    assert await store.get("job-1/0.png") == PNG


async def test_delete_removes_and_is_idempotent(store: BlobStore) -> None:
    await store.put("job-1/0.png", PNG, "image/png")
    await store.put("job-1/1.png", PNG, "image/png")
    await store.put("job-2/0.png", PNG, "image/png")
    await store.delete(["job-1/0.png", "job-1/1.png", "job-1/2.png"])  # job-1/2.png never existed
    assert await store.get("job-1/0.png") is None
    assert await store.get("job-1/1.png") is None
    assert await store.get("job-2/0.png") == PNG
    await store.delete(["job-1/0.png", "job-1/1.png"])  # retention may run twice
    await store.delete([])


@pytest.mark.parametrize("key", NOT_OURS)
async def test_keys_that_are_not_ours_are_refused(store: BlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid blob key"):
        await store.put(key, PNG, "image/png")
    with pytest.raises(ValueError, match="invalid blob key"):
        await store.get(key)
    with pytest.raises(ValueError, match="invalid blob key"):
        await store.delete([key])


async def test_local_delete_removes_the_emptied_job_folder_only(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.put("job-1/0.png", PNG, "image/png")
    await store.put("job-1/1.png", PNG, "image/png")
    await store.delete(["job-1/0.png"])
    assert (tmp_path / "job-1").is_dir()  # one image left
    await store.delete(["job-1/1.png"])
    assert not (tmp_path / "job-1").exists()
    assert tmp_path.is_dir()


async def test_local_store_has_no_public_links(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.put("job-1/0.png", PNG, "image/png")
    assert await store.public_link("job-1/0.png", 60) is None


async def test_s3_objects_land_under_the_prefix_with_their_content_type(
    s3proxy: LocalS3, s3_store: S3BlobStore, prefix: str
) -> None:
    await s3_store.put("job-1/0.png", PNG, "image/png")
    # S3Proxy's filesystem backend keeps an object as a file: bucket/prefix/key.
    assert (s3proxy.data_dir / BUCKET / prefix / "job-1" / "0.png").read_bytes() == PNG
    client = await s3_store._open()
    head = await client.head_object(Bucket=BUCKET, Key=f"{prefix}/job-1/0.png")
    assert head["ContentType"] == "image/png"
    await s3_store.delete(["job-1/0.png"])
    assert not (s3proxy.data_dir / BUCKET / prefix / "job-1" / "0.png").exists()


async def test_s3_presigned_link_serves_the_bytes_to_a_plain_http_client(
    s3proxy: LocalS3, s3_store: S3BlobStore, prefix: str
) -> None:
    await s3_store.put("job-1/0.png", PNG, "image/png")
    assert await s3_store.public_link("job-1/0.png", 60) is None  # off unless asked for
    s3_store.presign = True
    link = await s3_store.public_link("job-1/0.png", 60)
    assert link is not None and link.startswith(f"{s3proxy.endpoint_url}/{BUCKET}/{prefix}/job-1/0.png?")
    async with httpx.AsyncClient() as http:  # no credentials: the signature in the URL is the permission
        answer = await http.get(link)
        assert answer.status_code == 200
        assert answer.content == PNG
        assert answer.headers["content-type"] == "image/png"
        tampered = await http.get(link.replace("0.png", "1.png"))
        assert tampered.status_code == 403


def test_open_blob_store_follows_the_blob_url(tmp_path: Path) -> None:
    local = open_blob_store(Settings(blob_url=str(tmp_path / "blobs")))
    assert isinstance(local, LocalBlobStore) and local.root == tmp_path / "blobs"
    assert isinstance(open_blob_store(Settings(home=tmp_path)), LocalBlobStore)
    s3 = open_blob_store(
        Settings(blob_url="s3://bucket/some/prefix/", s3_endpoint_url="http://127.0.0.1:1", s3_presigned_urls=1)
    )
    assert isinstance(s3, S3BlobStore)
    assert (s3.bucket, s3.prefix, s3.endpoint_url, s3.presign) == ("bucket", "some/prefix", "http://127.0.0.1:1", True)
    with pytest.raises(ValueError, match="names no bucket"):
        open_blob_store(Settings(blob_url="s3:///prefix"))


def test_local_s3_without_jars_says_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(S3Error, match="make install"):
        LocalS3(tmp_path).start()
