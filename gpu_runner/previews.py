"""Cheap previews while denoising: SDXL latents → RGB with a fixed linear map, or a tiny VAE (TAESD).

What is previewed is the step's denoised estimate (the clean latents x0 the scheduler predicted,
gpu_runner/steps.py), so an early preview already shows the picture's layout and colours rather
than noise. The factors are ComfyUI's for SDXL (`comfy/latent_formats.py`; A1111's
`sd_vae_approx.cheap_approximation` has near-identical ones, without the bias); they act on the
scaled latents the step callback sees and give RGB in [-1, 1]. The latent is 1/8 of the image; the preview is
the image's shape scaled to fit `MAX_SIDE` (never larger than the image), as JPEG.

With EASEL_PREVIEW_VAE naming a TAESD (diffusers' AutoencoderTiny; madebyollin/taesdxl for SDXL), the estimate is
decoded by it instead: a few ms on a GPU, and a picture close to the final one where the linear map only gives
its colours. TAESD decodes the same scaled latents (its scaling factor is 1) to the full image size, which is then
scaled down as above. It is loaded once, by `PreviewDecoder.load`, on the generator's thread.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import structlog
import torch
from diffusers import AutoencoderTiny
from PIL import Image

log = structlog.get_logger(__name__)

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


class PreviewDecoder:
    """A TAESD that turns the estimate's latents into RGB (see the module's docstring)."""

    def __init__(self, taesd: AutoencoderTiny) -> None:
        self.taesd = taesd

    @classmethod
    def load(cls, preview_vae: str, device: str | torch.device, dtype: torch.dtype) -> PreviewDecoder | None:
        """EASEL_PREVIEW_VAE's TAESD (a folder or hub id) on the pipeline's device and dtype; None when unset."""
        if not preview_vae:
            return None
        log.info("loading preview VAE", preview_vae=preview_vae)
        taesd = AutoencoderTiny.from_pretrained(preview_vae, dtype=dtype).to(device)
        return cls(taesd)

    @torch.no_grad()
    def rgb(self, latents: torch.Tensor) -> torch.Tensor:
        """(3, 8·h, 8·w) in [-1, 1] from one image's (4, h, w) scaled latents."""
        taesd = self.taesd
        decoded: torch.Tensor = taesd.decode(latents[None].to(taesd.device, taesd.dtype), return_dict=False)[0]
        return decoded[0].float()


@torch.no_grad()
def latents_to_image(
    latents: torch.Tensor, width: int, height: int, decoder: PreviewDecoder | None = None
) -> Image.Image:
    """The first image of the batch from its (scaled SDXL) latents: decoded by `decoder`, else approximated."""
    if decoder is not None:
        rgb = decoder.rgb(latents[0])
    else:
        x = latents[0].float()
        rgb = torch.einsum("chw,cr->rhw", x, _FACTORS.to(x.device)) + _BIAS.to(x.device)[:, None, None]
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(pixels, "RGB").resize(preview_size(width, height), Image.Resampling.BILINEAR)


def preview_event_data(
    latents: torch.Tensor, step: int, total: int, width: int, height: int, decoder: PreviewDecoder | None = None
) -> dict[str, Any]:
    """A `preview` event's payload: a small JPEG, base64 (a few KiB; far under Kafka's 1 MiB)."""
    image = latents_to_image(latents, width, height, decoder)
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
