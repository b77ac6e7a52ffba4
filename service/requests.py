"""Reading request bodies: size-capped JSON objects, with errors a client can act on."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from service.errors import ApiError

MAX_BODY_BYTES = 1 << 20


async def capped_body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, "too_large", f"the body exceeds {MAX_BODY_BYTES} bytes", field="body")
    return body


async def json_object(request: Request) -> dict[str, Any]:
    body = await capped_body(request)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc.msg}", field="body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object", field="body")
    return data


def bounded_float(request: Request, name: str, default: float, maximum: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ApiError(400, "invalid_request", f"{name}: must be a number", field=name) from None
    if not 0 <= value <= maximum:
        raise ApiError(400, "invalid_request", f"{name}: must be between 0 and {maximum:g}", field=name)
    return value
