"""A tiny safety checker, built offline, whose verdict is chosen when it is built.

StableDiffusionSafetyChecker flags an image when, for some concept, the cosine similarity between
the image embedding and the concept embedding exceeds that concept's weight (a threshold). Cosine
similarity lies in [-1, 1], so thresholds of -2 flag every image and thresholds of 2 flag none,
whatever the random vision tower sees: a deterministic checker for tests and local runs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessor

IMAGE_SIZE = 32


def build_tiny_checker(flag_everything: bool) -> StableDiffusionSafetyChecker:
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 1},
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_hidden_layers": 1,
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    checker = StableDiffusionSafetyChecker(config).eval()
    threshold = -2.0 if flag_everything else 2.0
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(threshold)
        checker.special_care_embeds_weights.fill_(threshold)
    return checker


def tiny_feature_extractor() -> CLIPImageProcessor:
    return CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )


def save_tiny_checker(target: Path, flag_everything: bool) -> Path:
    """The checker and its feature extractor side by side, loadable with from_pretrained."""
    target.mkdir(parents=True, exist_ok=True)
    build_tiny_checker(flag_everything).save_pretrained(str(target))
    tiny_feature_extractor().save_pretrained(str(target))
    return target
