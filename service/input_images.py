"""Input images (img2img init images, inpainting masks) as clients send them, turned into stored blob keys.

A client sends an image as base64 (plain, or a `data:image/...;base64,` URL) or as an http(s) URL. A URL is
fetched through the webhooks' SSRF rules (`AddressPolicy`, `vetted_connector`, EASEL_WEBHOOK_ALLOW_NETWORKS), with
a timeout and a read capped at EASEL_MAX_INPUT_IMAGE_BYTES. Every image goes through the contract's
`checked_image`, a mask through `check_mask_fits`; the PNGs are stored (by `service.submission.enqueue`) only once
every check passed, so a refused request stores nothing. Each problem is an InvalidField naming the image as the
client sent it (`init_images[0]`, `input.mask_image`, ...), which each dialect renders in its own shape.

A route takes the images out of a dialect's JobSpec fields with `split_images` (the job then carries the keys
they will be stored under), validates the job, then reads them with `read_images`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from PIL import Image, ImageFilter, ImageOps

from consumers.webhooks.addresses import AddressPolicy, BlockedAddress
from consumers.webhooks.connector import vetted_connector
from contract.blobs import input_image_key
from contract.errors import InvalidField
from contract.input_images import as_png, check_mask_fits, checked_image
from contract.settings import Settings

# The job fields that carry input images, and each one's role in its blob key.
IMAGE_ROLES = {"init_image": "init", "mask_image": "mask"}
# Where a client's value sits in the object a dialect echoes: keys and list indexes from there.
Path = tuple[str | int, ...]
FETCH_TIMEOUT_S = 20.0
_CHUNK_BYTES = 64 * 1024
_URL_SCHEMES = ("http://", "https://")


def field_name(path: Path, prefix: str = "") -> str:
    """A path as a client reads it: `input.payload.init_images[0]`."""
    name = prefix
    for part in path:
        name = f"{name}[{part}]" if isinstance(part, int) else f"{name}.{part}" if name else part
    return name


def stored_marker(key: str) -> dict[str, str]:
    """What an echoed request carries in place of an image: its key, never its bytes."""
    return {"stored": key}


@dataclass(frozen=True)
class SentImages:
    """The images a request carries, as sent: job field → (the value, its path in the echoed object)."""

    job_id: str
    values: Mapping[str, tuple[object, Path]]
    prefix: str = ""
    invert_mask: bool = False  # A1111 `inpainting_mask_invert`: black is repainted
    fill_masked: bool = False  # A1111 `inpainting_fill` 0: the init image under the mask filled from around it

    def name(self, field: str) -> str:
        return field_name(self.values[field][1], self.prefix)

    def key(self, field: str) -> str:
        return input_image_key(self.job_id, IMAGE_ROLES[field])

    def echo(self, echoed: dict[str, Any]) -> dict[str, Any]:
        """`echoed` (the request part a dialect echoes) with each image replaced by its `stored_marker`."""
        for field, (_, path) in self.values.items():
            echoed = _replaced(echoed, path, stored_marker(self.key(field)))
        return echoed


def split_images(
    fields: dict[str, Any],
    job_id: str,
    paths: Mapping[str, Path],
    prefix: str = "",
    *,
    invert_mask: bool = False,
    fill_masked: bool = False,
) -> tuple[dict[str, Any], SentImages]:
    """(`fields` with the keys the images will be stored under in place of the images, the images as sent).

    `paths`: where each image field sits in the request part the dialect echoes; `prefix`: where that part sits.
    """
    values = {field: (fields[field], paths[field]) for field in IMAGE_ROLES if fields.get(field) is not None}
    sent = SentImages(job_id, values, prefix, invert_mask, fill_masked)
    return {**fields, **{field: sent.key(field) for field in values}}, sent


async def read_images(settings: Settings, sent: SentImages) -> dict[str, bytes]:
    """Blob key → PNG for each image sent, every one checked; InvalidField naming the first one refused."""
    images: dict[str, Image.Image] = {}
    for field, (value, _) in sent.values.items():
        name = sent.name(field)
        data = await _bytes_of(settings, value, name)
        images[field] = await asyncio.to_thread(
            checked_image, data, name,
            max_bytes=settings.max_input_image_bytes, max_pixels=settings.max_input_image_pixels,
        )
    if (mask := images.get("mask_image")) is not None and (init := images.get("init_image")) is not None:
        check_mask_fits(mask, init, sent.name("mask_image"))
        if sent.invert_mask:
            images["mask_image"] = mask = ImageOps.invert(mask.convert("L"))
        if sent.fill_masked:
            images["init_image"] = await asyncio.to_thread(_filled, init, mask)
    pngs = await asyncio.gather(*(asyncio.to_thread(as_png, image) for image in images.values()))
    return {sent.key(field): png for field, png in zip(images, pngs, strict=True)}


async def _bytes_of(settings: Settings, value: object, name: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise InvalidField("must be an image as base64 (or a data URL) or an http(s) URL", name)
    if value.startswith(_URL_SCHEMES):
        return await _fetched(settings, value, name)
    return _decoded(value, name, settings.max_input_image_bytes)


def _decoded(value: str, name: str, max_bytes: int) -> bytes:
    if value.startswith("data:"):  # data:image/png;base64,<data>, as browsers and A1111's UI send
        header, _, value = value.partition(",")
        if not header.endswith(";base64"):
            raise InvalidField("a data URL must be base64 (data:image/...;base64,...)", name)
    value = "".join(value.split())  # some encoders wrap lines
    if len(value) > base64_length(max_bytes):  # refused before decoding what cannot fit
        raise InvalidField(
            f"is over {max_bytes} bytes once decoded; at most {max_bytes} are accepted (EASEL_MAX_INPUT_IMAGE_BYTES)",
            name,
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidField("is neither base64 nor an http(s) URL", name) from None


def base64_length(size: int) -> int:
    """How long `size` bytes are as base64: what a request carrying an image of that size takes."""
    return 4 * -(-size // 3)


async def _fetched(settings: Settings, url: str, name: str) -> bytes:
    """The body at `url`, through the webhooks' SSRF rules, within FETCH_TIMEOUT_S and the byte cap."""
    policy = AddressPolicy.from_cidrs(settings.webhook_allow_networks)
    limit = settings.max_input_image_bytes
    try:
        policy.check_url(url)  # scheme and literal addresses, said plainly; names are vetted as they are dialled
        connector = vetted_connector(policy, limit=2, limit_per_host=2)
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
            session.get(url, max_redirects=3) as response,
        ):
            if response.status != 200:
                raise InvalidField(f"could not be fetched: the URL answered HTTP {response.status}", name)
            if (response.content_length or 0) > limit:
                raise InvalidField(_over(response.content_length or 0, limit), name)
            data = bytearray()
            async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
                data += chunk
                if len(data) > limit:
                    raise InvalidField(_over(len(data), limit, more=True), name)
            return bytes(data)
    except BlockedAddress as exc:
        raise InvalidField(f"not allowed: {exc}", name) from None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, BlockedAddress):
            raise InvalidField(f"not allowed: {exc.os_error}", name) from None
        raise InvalidField("could not be fetched: the host did not answer", name) from None
    except TimeoutError:
        raise InvalidField(f"could not be fetched within {FETCH_TIMEOUT_S:g} s", name) from None
    except aiohttp.TooManyRedirects:
        raise InvalidField("could not be fetched: too many redirects", name) from None
    except (aiohttp.ClientError, ValueError):
        raise InvalidField("could not be fetched", name) from None


def _filled(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's `masking.fill`: what the mask covers painted with the colours around it, blurred ever finer."""
    filled = Image.new("RGBA", image.size)
    kept = Image.new("RGBa", image.size)
    kept.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = kept.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            filled.alpha_composite(blurred)
    return filled.convert("RGB")


def _over(size: int, limit: int, more: bool = False) -> str:
    return f"is {'over ' if more else ''}{size} bytes; at most {limit} are accepted (EASEL_MAX_INPUT_IMAGE_BYTES)"


def _replaced(value: Any, path: Path, marker: object) -> Any:
    """A copy of `value` with the item at `path` replaced (the path exists: the image was read from there)."""
    if not path:
        return marker
    head, rest = path[0], path[1:]
    if isinstance(value, dict) and isinstance(head, str) and head in value:
        return {**value, head: _replaced(value[head], rest, marker)}
    if isinstance(value, list) and isinstance(head, int) and 0 <= head < len(value):
        return [*value[:head], _replaced(value[head], rest, marker), *value[head + 1:]]
    return value
