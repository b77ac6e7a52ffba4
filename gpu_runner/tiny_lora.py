"""A tiny LoRA for the tiny SDXL (gpu_runner/tiny_model.py), built offline, for tests and the demo.

LoRA layers are injected with peft's LoraConfig into the tiny UNet's attention projections (and, on request,
both text encoders' attention), filled with seeded random weights (a trained LoRA starts with B = 0, which would
change nothing), and saved as `<folder>/<name>.safetensors` with diffusers' SDXL LoRA writer: the same file
format a LoRA trained with diffusers has, loaded by `load_lora_weights` like any other.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from contract.loras import LORA_SUFFIX
from gpu_runner.tiny_model import build_tiny_unet, tiny_text_encoder_config

RANK = 4
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
# The weights' spread: large enough that weight 1 visibly changes the tiny model's image.
SPREAD = 0.5


def save_tiny_lora(folder: Path, name: str = "tiny", *, seed: int = 0, text_encoders: bool = False) -> Path:
    """Write `<folder>/<name>.safetensors`: UNet LoRA layers, plus both text encoders' when `text_encoders`.

    The same seed gives the same file's weights.
    """
    random = torch.Generator("cpu").manual_seed(seed)
    layers: dict[str, dict[str, torch.Tensor]] = {
        "unet_lora_layers": _lora_layers(build_tiny_unet(), UNET_TARGETS, random)
    }
    if text_encoders:
        config = tiny_text_encoder_config()
        layers["text_encoder_lora_layers"] = _lora_layers(CLIPTextModel(config), TEXT_ENCODER_TARGETS, random)
        layers["text_encoder_2_lora_layers"] = _lora_layers(
            CLIPTextModelWithProjection(config), TEXT_ENCODER_TARGETS, random
        )
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionXLPipeline.save_lora_weights(str(folder), weight_name=f"{name}{LORA_SUFFIX}", **layers)
    return folder / f"{name}{LORA_SUFFIX}"


def _lora_layers(model: torch.nn.Module, targets: list[str], random: torch.Generator) -> dict[str, torch.Tensor]:
    """The LoRA weights of `model`'s `targets`, random, under the names diffusers saves them with."""
    config = LoraConfig(r=RANK, lora_alpha=RANK, target_modules=targets, init_lora_weights=False)
    injected = inject_adapter_in_model(config, model)
    state = get_peft_model_state_dict(injected)
    seeded = {key: torch.randn(value.shape, generator=random) * SPREAD for key, value in sorted(state.items())}
    converted: dict[str, torch.Tensor] = convert_state_dict_to_diffusers(seeded)
    return converted
