"""API keys: `Authorization: Bearer <key>`, or a `key` field (body or query) as ModelsLab clients send.

Jobs are owned by a key id (a hash prefix of the key), so the key itself is never stored on Kafka.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from starlette.requests import Request

from service.errors import ApiError


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class ApiKeys:
    def __init__(self, keys: Iterable[str]) -> None:
        self._ids = {hashlib.sha256(k.encode()).digest(): key_id(k) for k in keys}

    def authenticate(self, request: Request, body: Mapping[str, object] | None = None) -> str:
        """The key id of the request's key; 401 when it has none or an unknown one."""
        presented = _presented_key(request, body)
        if not presented:
            raise ApiError(
                401, "unauthorized", "an API key is required: Authorization: Bearer <key>", field="key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        owner = self._ids.get(hashlib.sha256(presented.encode()).digest())
        if owner is None:
            raise ApiError(401, "unauthorized", "invalid API key", field="key", headers={"WWW-Authenticate": "Bearer"})
        return owner


def _presented_key(request: Request, body: Mapping[str, object] | None) -> str | None:
    header = request.headers.get("authorization", "").strip()
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    if header and not credentials:  # some RunPod examples send the bare key
        return header
    if body is not None and isinstance(body.get("key"), str):
        return str(body["key"])
    return request.query_params.get("key")
