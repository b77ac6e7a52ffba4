"""The blob store: where images live. Only their keys travel on Kafka.

A local folder by default (shared by the runner that writes and the API that serves). Keys are
derived from the job id and image index, so a redelivered job overwrites, never duplicates.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/[0-9]{1,3}\.(png|jpeg|webp)$")

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def image_key(job_id: str, index: int, fmt: str) -> str:
    return f"{job_id}/{index}.{fmt}"


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):  # keys come from our own state topic, but never trust a path
            raise ValueError(f"invalid blob key {key!r}")
        return self.root / key
