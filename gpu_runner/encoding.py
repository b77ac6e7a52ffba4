"""Images to bytes in the requested format."""

from __future__ import annotations

import io

from PIL import Image

_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def encode_image(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": 92} if fmt in ("jpeg", "webp") else {}
    image.convert("RGB").save(buffer, format=_PIL_FORMAT[fmt], **options)
    return buffer.getvalue()
