"""API keys: `Authorization: Bearer <key>`, or a `key` field (body or query) as ModelsLab clients send.

Jobs are owned by a key id (a hash prefix of the key), so the key itself is never stored on Kafka.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from starlette.requests import Request

from contract.errors import Unauthorized
from contract.keys import key_id

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class ApiKeys:
    def __init__(self, keys: Iterable[str]) -> None:
        self._ids = {hashlib.sha256(k.encode()).digest(): key_id(k) for k in keys}

    def authenticate(self, request: Request, body: Mapping[str, object] | None = None, field: str = "key") -> str:
        """The key id of the request's key; Unauthorized when it has none or an unknown one.

        `field`: where the dialect's clients put the key (`input.api_key` for Skidio), to name it in the error.
        """
        presented = _presented_key(request, body)
        if not presented:
            rule = f"an API key is required: Authorization: Bearer <key>, or the `{field}` field"
            raise Unauthorized(rule, field, headers=_CHALLENGE)
        owner = self._ids.get(hashlib.sha256(presented.encode()).digest())
        if owner is None:
            raise Unauthorized("invalid API key", field, headers=_CHALLENGE)
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
