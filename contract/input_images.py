"""Input images (img2img init images, inpainting masks): checked before anything decodes them, stored as PNG.

The API runs every image a client sends through `checked_image` before storing it; a runner opens what it reads
back the same way (a job written straight to Kafka may name any stored key). Pillow reads only the header to
learn the type and size, so a decompression bomb (a small file claiming 20,000² pixels) is refused before a
single pixel is decoded.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from contract.errors import InvalidField

# What clients send: what browsers and A1111 produce. Nothing else is opened (no TIFF, PSD, EPS, ...).
INPUT_FORMATS = ("PNG", "JPEG", "WEBP")


def checked_image(data: bytes, field: str, *, max_bytes: int, max_pixels: int) -> Image.Image:
    """`data` decoded as RGB or L, or InvalidField naming `field`: too large, not an image of INPUT_FORMATS, or
    more than `max_pixels` pixels (checked from the header, before decoding)."""
    if len(data) > max_bytes:
        raise InvalidField(
            f"is {len(data)} bytes; at most {max_bytes} are accepted (EASEL_MAX_INPUT_IMAGE_BYTES)", field
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidField(
                    f"is {width}×{height} pixels; at most {max_pixels} pixels are accepted "
                    "(EASEL_MAX_INPUT_IMAGE_PIXELS)",
                    field,
                )
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard, which fires while opening far larger images than ours: the same refusal.
        raise InvalidField(
            f"has too many pixels; at most {max_pixels} are accepted (EASEL_MAX_INPUT_IMAGE_PIXELS)", field
        ) from None
    except UnidentifiedImageError:
        raise InvalidField(f"is not a {', '.join(INPUT_FORMATS)} image", field) from None
    except (OSError, SyntaxError, ValueError):  # truncated or corrupt data past a valid header
        raise InvalidField("could not be decoded as an image", field) from None
    return image if image.mode in ("RGB", "L") else image.convert("RGBA" if "A" in image.getbands() else "RGB")


def as_png(image: Image.Image) -> bytes:
    """The image as the PNG the store keeps: metadata dropped, fast compression (it is read back once)."""
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def check_mask_fits(mask: Image.Image, init: Image.Image, field: str = "mask_image") -> None:
    """InvalidField naming `field` unless the mask has the init image's size."""
    if mask.size != init.size:
        raise InvalidField(
            f"is {mask.width}×{mask.height}; it must be the init image's size, {init.width}×{init.height}", field
        )
