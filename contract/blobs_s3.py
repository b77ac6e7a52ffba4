"""Blobs on any S3-compatible store (AWS S3, S3Proxy, MinIO, R2, ...), through aiobotocore.

aiobotocore rather than obstore: both are async, but obstore always deletes through DeleteObjects with a
SHA-256 checksum header that S3Proxy (and some other S3-compatible stores) refuse with 501; botocore is what
most S3-compatible servers test against. Credentials and region come from botocore's usual chain
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, profiles, instance roles).

With `presign`, `public_link` hands out presigned GET URLs (SigV4: what every AWS region and S3Proxy take), so
the API redirects public image links to the store instead of streaming the bytes itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from contract.blobs import check_key

MAX_LINK_S = 7 * 24 * 3600  # the longest a SigV4 presigned URL may last

if TYPE_CHECKING:
    from contract.settings import Settings


class S3BlobStore:
    """Blobs under `s3://bucket/prefix`. The client opens on first use, in the loop that uses it."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None, presign: bool = False) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.presign = presign
        self._exits = AsyncExitStack()
        self._client: Any = None
        self._opening = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        url = urlsplit(settings.blob_location)
        if not url.netloc:
            raise ValueError(f"EASEL_BLOB_URL={settings.blob_location!r} names no bucket (s3://bucket/prefix)")
        return cls(url.netloc, url.path, settings.s3_endpoint_url or None, presign=bool(settings.s3_presigned_urls))

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        client = await self._open()
        await client.put_object(Bucket=self.bucket, Key=self._name(key), Body=data, ContentType=content_type)

    async def get(self, key: str) -> bytes | None:
        client = await self._open()
        try:
            answer = await client.get_object(Bucket=self.bucket, Key=self._name(key))
        except client.exceptions.NoSuchKey:
            return None
        async with answer["Body"] as body:
            data: bytes = await body.read()
            return data

    async def delete(self, keys: Iterable[str]) -> None:
        # One DeleteObject per key: DeleteObjects needs a checksum header not every S3-compatible store takes.
        client = await self._open()
        for key in keys:
            await client.delete_object(Bucket=self.bucket, Key=self._name(key))

    async def public_link(self, key: str, expires_s: float) -> str | None:
        if not self.presign:
            return None
        client = await self._open()
        params = {"Bucket": self.bucket, "Key": self._name(key)}
        expires_in = min(MAX_LINK_S, max(1, int(expires_s)))
        url: str = await client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in)
        return url

    async def close(self) -> None:
        await self._exits.aclose()
        self._client = None

    async def _open(self) -> Any:
        async with self._opening:
            if self._client is None:
                # Checksums only where S3 requires them: S3-compatible stores reject botocore's new defaults.
                config = AioConfig(
                    signature_version="s3v4",
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                client = get_session().create_client("s3", endpoint_url=self.endpoint_url, config=config)
                self._client = await self._exits.enter_async_context(client)
        return self._client

    def _name(self, key: str) -> str:
        return f"{self.prefix}/{check_key(key)}" if self.prefix else check_key(key)
