"""Previews decoded by a TAESD (EASEL_PREVIEW_VAE): the tiny one built offline, loaded with diffusers' real loader,
fed the denoised estimate of the real tiny pipeline. Still bounded in size; not the linear map's picture."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contract.job import Job
from gpu_runner.pipeline import SDXLGenerator
from gpu_runner.previews import MAX_SIDE, PreviewDecoder, latents_to_image, preview_event_data
from gpu_runner.tiny_model import save_tiny_taesd


@pytest.fixture(scope="module")
def generator(tiny_model: str) -> SDXLGenerator:
    return SDXLGenerator(tiny_model, "cpu")


@pytest.fixture(scope="module")
def decoder(generator: SDXLGenerator, tmp_path_factory: pytest.TempPathFactory) -> PreviewDecoder:
    folder = save_tiny_taesd(tmp_path_factory.mktemp("taesd") / "tiny-taesd")
    loaded = generator.call(PreviewDecoder.load, str(folder), generator.device, generator.pipe.dtype)
    assert loaded is not None
    return loaded


def estimates(generator: SDXLGenerator, width: int, height: int) -> list[torch.Tensor]:
    """Each step's denoised estimate, as the runner's latents callback gets it."""
    job = Job(id="j", owner="o", prompt="a fox", width=width, height=height, steps=4)
    record: list[torch.Tensor] = []
    generator.generate(job, [5], lambda step, total: None, lambda s, t, x, x0: record.append(x0.clone()))
    return record


def test_no_preview_vae_means_the_linear_map() -> None:
    assert PreviewDecoder.load("", "cpu", torch.float32) is None


def test_taesd_decodes_to_the_image_size_before_scaling_down(decoder: PreviewDecoder) -> None:
    assert decoder.rgb(torch.randn(4, 12, 16)).shape == (3, 96, 128)  # 8× the latents, as the SDXL VAE


@pytest.mark.parametrize(("width", "height"), [(64, 64), (512, 384)])
def test_taesd_previews_of_the_estimate_are_bounded(
    generator: SDXLGenerator, decoder: PreviewDecoder, width: int, height: int
) -> None:
    expected = (width, height) if max(width, height) <= MAX_SIDE else (MAX_SIDE, MAX_SIDE * height // width)
    x0 = estimates(generator, width, height)[1]
    data = generator.call(preview_event_data, x0, 2, 4, width, height, decoder)
    image = Image.open(io.BytesIO(base64.b64decode(data["image"])))
    assert image.format == "JPEG" and (data["width"], data["height"]) == image.size == expected


def test_taesd_previews_differ_from_the_linear_map(generator: SDXLGenerator, decoder: PreviewDecoder) -> None:
    for x0 in estimates(generator, 64, 64)[:-1]:
        decoded = np.asarray(generator.call(latents_to_image, x0, 64, 64, decoder)).astype(int)
        linear = np.asarray(latents_to_image(x0, 64, 64)).astype(int)
        assert decoded.shape == linear.shape
        assert np.abs(decoded - linear).mean() > 5


def test_a_batch_previews_its_first_image(generator: SDXLGenerator, decoder: PreviewDecoder) -> None:
    latents = torch.randn(3, 4, 8, 8)
    first = np.asarray(generator.call(latents_to_image, latents, 64, 64, decoder))
    alone = np.asarray(generator.call(latents_to_image, latents[:1], 64, 64, decoder))
    assert np.array_equal(first, alone)


def test_a_saved_taesd_loads_in_the_pipeline_dtype(tmp_path: Path) -> None:
    decoder = PreviewDecoder.load(str(save_tiny_taesd(tmp_path / "taesd")), "cpu", torch.bfloat16)
    assert decoder is not None and decoder.taesd.dtype == torch.bfloat16
    assert latents_to_image(torch.randn(1, 4, 8, 8), 64, 64, decoder).size == (64, 64)
