"""Cheap previews while denoising: SDXL latents → RGB with a fixed linear map, no VAE.

What is previewed is the step's denoised estimate (the clean latents x0 the scheduler predicted,
gpu_runner/steps.py), so an early preview already shows the picture's layout and colours rather
than noise. The factors are ComfyUI's for SDXL (`comfy/latent_formats.py`; A1111's
`sd_vae_approx.cheap_approximation` has near-identical ones, without the bias); they act on the
scaled latents the step callback sees and give RGB in [-1, 1]. The latent is 1/8 of the image; the preview is
the image's shape scaled to fit `MAX_SIDE` (never larger than the image), as JPEG.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import torch
from PIL import Image

MAX_SIDE = 256
PREVIEWS_PER_JOB = 10  # when EASEL_PREVIEW_EVERY is 0
JPEG_QUALITY = 70
_FACTORS = torch.tensor(
    [[0.3651, 0.4232, 0.4341], [-0.2533, -0.0042, 0.1068], [0.1076, 0.1111, -0.0362], [-0.3165, -0.2492, -0.2188]]
)
_BIAS = torch.tensor([0.1084, -0.0175, -0.0011])


def preview_interval(steps: int, every: int = 0) -> int:
    """Steps between previews: `every`, or about PREVIEWS_PER_JOB per job when it is 0."""
    return every if every > 0 else max(1, math.ceil(steps / PREVIEWS_PER_JOB))


def wants_preview(step: int, total: int, interval: int) -> bool:
    return step % interval == 0 and step < total  # the last step's picture is the image itself


def preview_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, MAX_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


@torch.no_grad()
def latents_to_image(latents: torch.Tensor, width: int, height: int) -> Image.Image:
    """The first image of the batch, approximated from its (scaled SDXL) latents."""
    x = latents[0].float()
    rgb = torch.einsum("chw,cr->rhw", x, _FACTORS.to(x.device)) + _BIAS.to(x.device)[:, None, None]
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(pixels, "RGB").resize(preview_size(width, height), Image.Resampling.BILINEAR)


def preview_event_data(latents: torch.Tensor, step: int, total: int, width: int, height: int) -> dict[str, Any]:
    """A `preview` event's payload: a small JPEG, base64 (a few KiB; far under Kafka's 1 MiB)."""
    image = latents_to_image(latents, width, height)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return {
        "step": step,
        "total": total,
        "width": image.width,
        "height": image.height,
        "content_type": "image/jpeg",
        "image": base64.b64encode(buffer.getvalue()).decode(),
    }
