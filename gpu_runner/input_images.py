"""A job's input images (img2img init image, inpainting mask): read from the blob store, opened safely, fitted.

The API stored them as PNG under the keys the job names; a job written straight to Kafka may name any key, so
the runner opens what it reads with the same checks the API ran (contract/input_images.py) and fails the job,
naming the field, when a blob is missing or is not an acceptable image.

Fitting follows AUTOMATIC1111's img2img: the init image is resized to the job's width × height ("just resize",
resize_mode 0); the mask is made greyscale (a PNG's alpha channel is the mask when it has one), blurred by
`mask_blur` pixels at its own resolution, then resized the same way.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from PIL import Image, ImageFilter

from contract.blobs import BlobStore
from contract.errors import InvalidField
from contract.input_images import check_mask_fits, checked_image
from contract.job import Job

RESAMPLE = Image.Resampling.LANCZOS  # A1111's resize
FLATTEN_ONTO = "white"  # A1111's img2img_background_color


@dataclass(frozen=True)
class InputImages:
    """What a job paints from: the init image (RGB) and the mask (L, white repainted), at the job's size."""

    init: Image.Image | None = None
    mask: Image.Image | None = None


async def read_input_images(job: Job, blobs: BlobStore, *, max_bytes: int, max_pixels: int) -> InputImages:
    """The job's input images fitted to its size (none for txt2img); InvalidField naming the field that fails."""
    if job.init_image is None:
        return InputImages()
    init_data = await _read(blobs, job.init_image, "init_image")
    mask_data = await _read(blobs, job.mask_image, "mask_image") if job.mask_image is not None else None
    # Decoding and resizing a large image takes a while: off the event loop (PIL only, no torch).
    return await asyncio.to_thread(_fitted, job, init_data, mask_data, max_bytes, max_pixels)


async def _read(blobs: BlobStore, key: str, field: str) -> bytes:
    data = await blobs.get(key)
    if data is None:
        raise InvalidField(f"no stored image under {key!r}", field)
    return data


def _fitted(job: Job, init_data: bytes, mask_data: bytes | None, max_bytes: int, max_pixels: int) -> InputImages:
    init = checked_image(init_data, "init_image", max_bytes=max_bytes, max_pixels=max_pixels)
    if mask_data is None:
        return InputImages(init=fit_init(init, job.width, job.height))
    mask = checked_image(mask_data, "mask_image", max_bytes=max_bytes, max_pixels=max_pixels)
    check_mask_fits(mask, init)
    fitted = fit_mask(mask, job.width, job.height, job.mask_blur)
    if job.mask_crop_padding is not None and fitted.getbbox() is None:
        # A blank mask has no region to crop to: A1111's "only masked" then runs plain img2img, and so does this.
        return InputImages(init=fit_init(init, job.width, job.height))
    return InputImages(init=fit_init(init, job.width, job.height), mask=fitted)


def fit_init(image: Image.Image, width: int, height: int) -> Image.Image:
    """The init image as RGB at width × height; a transparent one laid over white first, as A1111 flattens it."""
    if "A" in image.getbands():
        image = Image.alpha_composite(Image.new("RGBA", image.size, FLATTEN_ONTO), image.convert("RGBA"))
    return image.convert("RGB").resize((width, height), RESAMPLE)


def fit_mask(mask: Image.Image, width: int, height: int, blur: int) -> Image.Image:
    """The mask as L at width × height, blurred by `blur` pixels (a Gaussian's radius) before resizing."""
    has_alpha = "A" in mask.getbands() and mask.getextrema()[-1] != (255, 255)
    grey = mask.getchannel("A") if has_alpha else mask.convert("L")
    if blur:
        grey = grey.filter(ImageFilter.GaussianBlur(blur))
    return grey.resize((width, height), RESAMPLE)
