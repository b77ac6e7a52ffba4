"""The generator's GPU settings where a CPU can check them: dtype choice, a replacement VAE, channels_last, warm-up,
VAE tiling and slicing for large decodes (with the tiny model; the GPU numbers are bench/gpu.py's)."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL

from contract.errors import SettingsError
from contract.job import Job
from contract.settings import Settings
from gpu_runner.pipeline import SDXLGenerator, optimise_for_cuda, pick_device, pick_dtype, vae_is_fp16_safe


def job(**changes: object) -> Job:
    fields: dict[str, object] = {"prompt": "a fox", "id": "j", "owner": "o", "width": 64, "height": 64, "steps": 2}
    return Job(**{**fields, **changes})  # type: ignore[arg-type]


def no_steps(step: int, total: int) -> None:
    pass


@pytest.fixture(scope="module")
def fp16_safe_vae(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny model's VAE saved as one that says it decodes safely in fp16, as sdxl-vae-fp16-fix does."""
    vae = AutoencoderKL.from_pretrained(tiny_model, subfolder="vae")
    vae.register_to_config(force_upcast=False)
    path = tmp_path_factory.mktemp("fp16-safe-vae")
    vae.save_pretrained(path)
    return str(path)


@pytest.mark.parametrize(
    ("device", "requested", "fp16_safe", "expected"),
    [
        ("cpu", "auto", False, torch.float32),
        ("cpu", "fp32", True, torch.float32),
        ("cuda", "auto", True, torch.float16),
        ("cuda:1", "bf16", False, torch.bfloat16),
        ("cuda:0", "fp16", False, torch.float16),
        ("cuda", "fp32", True, torch.float32),
    ],
)
def test_dtype_follows_device_request_and_vae(
    device: str, requested: str, fp16_safe: bool, expected: torch.dtype
) -> None:
    assert pick_dtype(device, requested, fp16_safe) == expected


@pytest.mark.parametrize(("device", "requested"), [("cpu", "fp16"), ("cpu", "bf16"), ("cuda", "half"), ("cpu", "")])
def test_unusable_dtypes_are_settings_errors(device: str, requested: str) -> None:
    with pytest.raises(SettingsError, match="EASEL_DTYPE"):
        pick_dtype(device, requested, False)


def test_a_named_device_is_kept() -> None:
    assert pick_device("cuda:3") == "cuda:3"
    assert pick_device("cpu") == "cpu"


def test_fp16_safety_is_read_from_the_vae_config(tiny_model: str, fp16_safe_vae: str) -> None:
    assert not vae_is_fp16_safe(tiny_model, "")  # SDXL's own VAE asks for an fp32 upcast (the config's default)
    assert vae_is_fp16_safe(tiny_model, fp16_safe_vae)


def test_a_configured_vae_replaces_the_models(tiny_model: str, fp16_safe_vae: str) -> None:
    generator = SDXLGenerator(tiny_model, "cpu", vae=fp16_safe_vae)
    assert generator.pipe.vae.config.force_upcast is False
    [image] = generator.generate(job(), [1], no_steps)
    assert image.size == (64, 64)


def test_settings_reach_the_generator(tiny_model: str) -> None:
    generator = SDXLGenerator.from_settings(Settings(model=tiny_model, device="cpu", dtype="fp32"))
    assert (generator.device, generator.pipe.unet.dtype, generator.compiled) == ("cpu", torch.float32, False)
    with pytest.raises(SettingsError):
        SDXLGenerator.from_settings(Settings(model=tiny_model, device="cpu", dtype="fp16"))


def test_channels_last_changes_layout_not_images(tiny_model: str) -> None:
    generator = SDXLGenerator(tiny_model, "cpu")
    [before] = generator.generate(job(), [3], no_steps)
    generator.call(optimise_for_cuda, generator.pipe, False)
    conv = generator.pipe.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert generator.pipe.vae.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    [after] = generator.generate(job(), [3], no_steps)
    assert max(abs(a - b) for a, b in zip(before.tobytes(), after.tobytes(), strict=True)) <= 2


def test_warm_up_runs_the_given_sizes_and_jobs_follow(tiny_model: str) -> None:
    generator = SDXLGenerator(tiny_model, "cpu", decode_pixels_at_once=96 * 96)
    generator.warm_up([(128, 128)])
    assert generator.pipe.vae.use_tiling  # the warm-up job went through generate: 128² > 96²
    generator.warm_up()  # the default small size
    [image] = generator.generate(job(width=72), [1], no_steps)
    assert image.size == (72, 64)


def test_large_decodes_are_tiled_and_large_batches_sliced(tiny_model: str) -> None:
    # A small limit stands in for 1536²: the tiny VAE's tiles are 32 px, so a real large size would be thousands.
    generator = SDXLGenerator(tiny_model, "cpu", decode_pixels_at_once=128 * 128)
    vae = generator.pipe.vae
    [large] = generator.generate(job(width=192, height=160), [1], no_steps)
    assert large.size == (192, 160) and vae.use_tiling and not vae.use_slicing
    assert len(set(large.tobytes())) > 50  # decoded, not a blank or failed image

    images = generator.generate(job(width=96, height=96, num_images=2), [1, 2], no_steps)
    assert [image.size for image in images] == [(96, 96)] * 2 and vae.use_slicing and not vae.use_tiling
    # Sliced, each image decodes alone: the same pixels as a batch of one with its seed.
    [alone] = generator.generate(job(width=96, height=96), [2], no_steps)
    assert not vae.use_slicing
    assert max(abs(a - b) for a, b in zip(images[1].tobytes(), alone.tobytes(), strict=True)) <= 3
