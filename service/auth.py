"""API keys: `Authorization: Bearer <key>`, or a `key` field (body or query) as ModelsLab clients send, or, on
A1111's routes, HTTP Basic with the key as the password (A1111's `--api-auth`).

Jobs are owned by a key id (a hash prefix of the key), so the key itself is never stored on Kafka.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping

from starlette.requests import Request

from contract.errors import SettingsError, Unauthorized
from contract.keys import key_id

_BEARER_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="easel"'}


class ApiKeys:
    def __init__(self, keys: Iterable[str], basic_users: Iterable[str] = ()) -> None:
        """`basic_users`: EASEL_A1111_AUTH's `user:key` pairs. When there are some, HTTP Basic is accepted only for
        those pairs; without them, with any user name and an API key as the password."""
        self._ids = {_digest(k): key_id(k) for k in keys}
        self._basic_pairs: set[tuple[str, bytes]] = set()
        for pair in basic_users:
            user, colon, key = pair.partition(":")
            if not colon or not user or _digest(key) not in self._ids:
                raise SettingsError("EASEL_A1111_AUTH takes user:key pairs whose key is one of EASEL_API_KEYS")
            self._basic_pairs.add((user, _digest(key)))

    def authenticate(
        self, request: Request, body: Mapping[str, object] | None = None, field: str = "key", basic: bool = False
    ) -> str:
        """The key id of the request's key; Unauthorized when it has none or an unknown one.

        `field`: where the dialect's clients put the key (`input.api_key` for Skidio), to name it in the error.
        `basic`: also take HTTP Basic credentials (A1111's routes), and challenge for them.
        """
        challenge = _BASIC_CHALLENGE if basic else _BEARER_CHALLENGE
        credentials = _basic_credentials(request) if basic else None
        if credentials is not None:
            return self._basic_owner(*credentials)
        presented = _presented_key(request, body)
        if not presented:
            how = "HTTP Basic with the key as the password, " if basic else ""
            rule = f"an API key is required: {how}Authorization: Bearer <key>, or the `{field}` field"
            raise Unauthorized(rule, field, headers=challenge)
        owner = self._ids.get(_digest(presented))
        if owner is None:
            raise Unauthorized("invalid API key", field, headers=challenge)
        return owner

    def _basic_owner(self, user: str, password: str) -> str:
        digest = _digest(password)
        owner = self._ids.get(digest)
        allowed = not self._basic_pairs or (user, digest) in self._basic_pairs
        if owner is None or not allowed:
            raise Unauthorized("Incorrect username or password", "authorization", headers=_BASIC_CHALLENGE)
        return owner


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic` header, else None; Unauthorized when it cannot be read."""
    scheme, _, encoded = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        colon = ""
    if not colon:
        raise Unauthorized("Invalid authentication credentials", "authorization", headers=_BASIC_CHALLENGE)
    return user, password


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
