"""The blob store: where images live. Only their keys travel on Kafka.

`open_blob_store(settings)` gives a local folder by default (shared by the runner that writes and the
API that serves) or, for `s3://bucket/prefix`, any S3-compatible store (contract/blobs_s3.py). Keys are
derived from the job id and image index, so a redelivered job overwrites, never duplicates, and
retention deletes exactly what a job wrote.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from contract.settings import Settings

# A job's images, and the input images (img2img, inpainting) the API stored for it (INPUT_IMAGE_KEY_PATTERN).
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/([0-9]{1,3}\.(png|jpeg|webp)|(init|mask)\.png)$")

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def image_key(job_id: str, index: int, fmt: str) -> str:
    return f"{job_id}/{index}.{fmt}"


def input_image_key(job_id: str, role: str) -> str:
    """Where the API stores a job's input image: `role` is `init` or `mask`; always PNG (re-encoded on intake)."""
    return f"{job_id}/{role}.png"


def check_key(key: str) -> str:
    """`key` if it is one of ours (`<job id>/<index>.<format>`, `<job id>/init.png`, `<job id>/mask.png`); keys
    come from our own topics, but never trust one."""
    if not _KEY.match(key):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def get(self, key: str) -> bytes | None:
        """The blob, or None when there is none under `key`."""
        ...

    async def delete(self, keys: Iterable[str]) -> None:
        """Delete these blobs; missing ones are no error (retention may run twice)."""
        ...

    async def public_link(self, key: str, expires_s: float) -> str | None:
        """A URL the store itself serves `key` at for `expires_s` (presigned), or None: the API serves it."""
        ...

    async def close(self) -> None: ...


class LocalBlobStore:
    """Blobs as files under one folder. File work runs in a thread, never on the event loop."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._put, key, data)

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get, key)

    async def delete(self, keys: Iterable[str]) -> None:
        await asyncio.to_thread(self._delete, list(keys))

    async def public_link(self, key: str, expires_s: float) -> str | None:
        return None

    async def close(self) -> None:
        return None

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half

    def _get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def _delete(self, keys: list[str]) -> None:
        folders = set()
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            folders.add(path.parent)
        for folder in folders:  # a job's folder goes with its last image
            if folder.is_dir() and not any(folder.iterdir()):
                shutil.rmtree(folder, ignore_errors=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)


def open_blob_store(settings: Settings) -> BlobStore:
    """The store `settings.blob_location` names: `s3://bucket/prefix`, or else a local folder."""
    location = settings.blob_location
    if location.startswith("s3://"):
        from contract.blobs_s3 import S3BlobStore  # only S3 users pay for importing botocore

        return S3BlobStore.from_settings(settings)
    return LocalBlobStore(Path(location.removeprefix("file://")))
