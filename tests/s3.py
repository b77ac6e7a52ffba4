"""A real S3-compatible store for the tests: S3Proxy (easel/local_s3.py) on a free port, its data removed after."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from easel.local_s3 import LocalS3
from tests.processes import HOME, free_port

BUCKET = "easel-images"  # made before the store starts; tests keep apart by prefix


@contextmanager
def own_s3proxy() -> Iterator[LocalS3]:
    """S3Proxy with BUCKET in it, on a free port, so test sessions and a local setup share the machine."""
    s3 = LocalS3(HOME, port=free_port())
    shutil.rmtree(s3.data_dir, ignore_errors=True)
    s3.create_bucket(BUCKET)
    try:
        s3.start()
        yield s3
    finally:
        s3.stop()
        shutil.rmtree(s3.data_dir, ignore_errors=True)
