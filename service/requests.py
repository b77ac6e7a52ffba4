"""Reading request bodies: size-capped JSON objects, with errors a client can act on."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from contract.errors import BodyTooLarge, InvalidParameter, MalformedBody
from contract.settings import Settings
from service.input_images import base64_length

MAX_BODY_BYTES = 1 << 20


def image_body_bytes(settings: Settings) -> int:
    """The cap on a route that takes input images: an init image and a mask at EASEL_MAX_INPUT_IMAGE_BYTES, as
    base64, plus MAX_BODY_BYTES for the rest."""
    return 2 * base64_length(settings.max_input_image_bytes) + MAX_BODY_BYTES


async def capped_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"the body exceeds {limit} bytes", "body")
    return bytes(body)


async def json_object(request: Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    return parse_object(await capped_body(request, limit))


async def json_with_images(request: Request, settings: Settings) -> dict[str, Any]:
    """The body of a route that takes input images (see `image_body_bytes`)."""
    return await json_object(request, image_body_bytes(settings))


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
