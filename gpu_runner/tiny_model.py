"""A tiny, randomly initialised SDXL pipeline, built offline.

It runs the real diffusers code path (text encoders, UNet, scheduler, VAE) in well under a second
per image on a CPU, and produces noise. The VAE has four blocks, so its scale factor is 8 as in
real SDXL and requested sizes behave the same. Recipe: diffusers' own SDXL test components, with
a byte-level tokenizer written locally instead of one fetched from the Hub.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    EulerDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's byte-level table: every byte maps to one printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
    bs += list(range(ord("\xae"), ord("\xff") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_tiny_tokenizer(path: Path) -> CLIPTokenizer:
    """One token per character and no merges: 514 ids, below the text encoders' vocab of 1000."""
    path.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # must be the highest id: CLIP pools at argmax(input_ids)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(str(path), model_max_length=77)


def build_tiny_unet() -> UNet2DConditionModel:
    """The tiny base's UNet (seeded: the same weights every time)."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(2, 4),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=80,  # 6 time ids * 8 + projection_dim 32
        cross_attention_dim=64,  # hidden sizes of both text encoders, 32 + 32
        norm_num_groups=1,
    )


def tiny_text_encoder_config() -> CLIPTextConfig:
    """Both tiny text encoders' shape."""
    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
        vocab_size=1000,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        layer_norm_eps=1e-05,
        hidden_act="gelu",
        projection_dim=32,
    )


def build_tiny_sdxl(workdir: Path) -> StableDiffusionXLPipeline:
    unet = build_tiny_unet()
    scheduler = _sdxl_scheduler()
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[8, 16, 16, 16],
        layers_per_block=1,
        norm_num_groups=8,
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
    )
    torch.manual_seed(0)
    config = tiny_text_encoder_config()
    tokenizer = write_tiny_tokenizer(workdir / "tokenizer-src")
    return StableDiffusionXLPipeline(
        vae=vae,
        unet=unet,
        scheduler=scheduler,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        text_encoder=CLIPTextModel(config),
        text_encoder_2=CLIPTextModelWithProjection(config),
        image_encoder=None,
        feature_extractor=None,
        add_watermarker=False,
    )


def _sdxl_scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(  # the real SDXL scheduler config
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )


def build_tiny_refiner(base: StableDiffusionXLPipeline) -> StableDiffusionXLImg2ImgPipeline:
    """The refiner of diffusers' refiner-only tests: encoder 2 only, aesthetic score in the time ids.

    It shares the base's VAE, second text encoder and tokenizer, as the real SDXL refiner does.
    """
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=72,  # 5 time ids (aesthetic score included) * 8 + 32
        cross_attention_dim=32,  # encoder 2 only
    )
    return StableDiffusionXLImg2ImgPipeline(
        vae=base.vae,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=base.text_encoder_2,
        tokenizer_2=base.tokenizer_2,
        unet=unet,
        scheduler=_sdxl_scheduler(),
        requires_aesthetics_score=True,
        add_watermarker=False,
    )


def save_tiny_refiner(target: Path) -> Path:
    """Build the tiny refiner beside a freshly built tiny base (same seeds, so the same shared parts).

    Saved whole or not at all: it is built beside `target` and renamed into place, so a saved pipeline
    at `target` (what `easel dev` looks for) is never a half-written one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as workdir:
        building = Path(workdir) / "refiner"
        build_tiny_refiner(build_tiny_sdxl(Path(workdir) / "base")).save_pretrained(str(building))
        shutil.rmtree(target, ignore_errors=True)
        building.rename(target)
    return target


def build_tiny_taesd() -> AutoencoderTiny:
    """A tiny TAESD (diffusers' AutoencoderTiny) for the tiny base's latents: 4 channels, decoded 8× larger (three
    upsampling blocks), as madebyollin/taesdxl does for SDXL. Random but seeded: previews of noise."""
    torch.manual_seed(0)
    return AutoencoderTiny(
        encoder_block_out_channels=(4, 4, 4, 4),
        decoder_block_out_channels=(4, 4, 4, 4),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )


def save_tiny_taesd(target: Path) -> Path:
    """The tiny TAESD saved with save_pretrained, so EASEL_PREVIEW_VAE loads it with the real loader."""
    build_tiny_taesd().save_pretrained(str(target))
    return target


def save_tiny_sdxl(target: Path) -> Path:
    """Build the tiny pipeline and save it with save_pretrained, so loading uses the real loader."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        pipeline = build_tiny_sdxl(Path(workdir))
        pipeline.save_pretrained(str(target))
    return target


def is_saved_pipeline(path: Path) -> bool:
    return (path / "model_index.json").is_file()
