"""Reading request bodies: size-capped JSON objects, with errors a client can act on."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from contract.errors import BodyTooLarge, InvalidParameter, MalformedBody

MAX_BODY_BYTES = 1 << 20


async def capped_body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise BodyTooLarge(f"the body exceeds {MAX_BODY_BYTES} bytes", "body")
    return body


async def json_object(request: Request) -> dict[str, Any]:
    return parse_object(await capped_body(request))


def parse_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc.msg}", "body") from None
    if not isinstance(data, dict):
        raise MalformedBody("the body must be a JSON object", "body")
    return data


def bounded_float(request: Request, name: str, default: float, maximum: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidParameter("must be a number", name) from None
    if not 0 <= value <= maximum:
        raise InvalidParameter(f"must be between 0 and {maximum:g}", name)
    return value
