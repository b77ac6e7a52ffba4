"""Public image URLs: unguessable, signed links that clients can fetch without a key.

ModelsLab and RunPod clients download `output` URLs directly, so these links carry an HMAC of the
job id and image index instead of needing an Authorization header. The secret is EASEL_URL_SECRET,
or derived from the API keys so that instances sharing keys agree. service/file_urls.py serves them.
"""

from __future__ import annotations

import hashlib
import hmac

from contract.settings import Settings


def _secret(settings: Settings) -> bytes:
    if settings.url_secret:
        return settings.url_secret.encode()
    return hashlib.sha256("\n".join(sorted(settings.all_keys)).encode()).digest()


def file_token(settings: Settings, job_id: str, index: int) -> str:
    return hmac.new(_secret(settings), f"{job_id}/{index}".encode(), hashlib.sha256).hexdigest()[:32]


def file_url(settings: Settings, job_id: str, index: int) -> str:
    return f"{settings.base_url}/files/{job_id}/{index}?token={file_token(settings, job_id, index)}"


def file_urls(settings: Settings, job_id: str, count: int) -> list[str]:
    return [file_url(settings, job_id, i) for i in range(count)]
