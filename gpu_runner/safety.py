"""The optional safety checker: flagged images are replaced by black ones of the same size."""

from __future__ import annotations

import numpy as np
import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from PIL import Image
from transformers import CLIPImageProcessor


class SafetyChecker:
    """A saved StableDiffusionSafetyChecker and the CLIPImageProcessor saved beside it."""

    def __init__(self, path: str, device: str, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype
        self.model = StableDiffusionSafetyChecker.from_pretrained(path, dtype=dtype).to(device).eval()
        self.features = CLIPImageProcessor.from_pretrained(path)

    def check(self, images: list[Image.Image]) -> tuple[list[Image.Image], list[bool]]:
        """(images with flagged ones blacked out, flagged per image)."""
        pixels = self.features(images, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        arrays = [np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0 for image in images]
        _, flags = self.model(clip_input=pixels, images=arrays)
        flagged = [bool(flag) for flag in flags]
        # Our own black image rather than the checker's array: keeps the PIL mode and size exactly.
        checked = [Image.new("RGB", image.size) if flag else image for image, flag in zip(images, flagged, strict=True)]
        return checked, flagged
