"""Images to bytes in the requested format."""

from __future__ import annotations

import io

from PIL import Image
from PIL.PngImagePlugin import PngInfo

_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
# zlib level 1, not Pillow's 6: about half the encode time on the job's critical path (11–16 ms of a 256² job at
# level 6), for PNGs about 13% larger on a smooth 1024² image and no larger on noise (bench/peer.py).
PNG_COMPRESS_LEVEL = 1


def encode_image(image: Image.Image, fmt: str, parameters: str | None = None) -> bytes:
    """`parameters`: A1111's infotext, written where A1111 writes it (the PNG `parameters` text chunk)."""
    buffer = io.BytesIO()
    options: dict[str, object] = {"quality": 92} if fmt in ("jpeg", "webp") else {}
    if fmt == "png":
        options["compress_level"] = PNG_COMPRESS_LEVEL
        if parameters is not None:
            info = PngInfo()
            info.add_text("parameters", parameters)
            options["pnginfo"] = info
    image.convert("RGB").save(buffer, format=_PIL_FORMAT[fmt], **options)
    return buffer.getvalue()
