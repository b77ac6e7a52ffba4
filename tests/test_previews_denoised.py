"""Previews show the denoised estimate (the clean latents x0 the scheduler predicted), through the linear SDXL
latent → RGB map, bounded in size and rate. The real tiny pipeline, no mocks."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from contract.job import Job
from gpu_runner.pipeline import SDXLGenerator
from gpu_runner.previews import (
    MAX_SIDE,
    PREVIEWS_PER_JOB,
    latents_to_image,
    preview_event_data,
    preview_interval,
    wants_preview,
)
from gpu_runner.tiny_model import save_tiny_refiner

Record = list[tuple[torch.Tensor, torch.Tensor]]
X0_SAMPLERS = ["Euler", "Euler a", "Heun", "LMS", "DPM2", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ SDE", "DDIM", "UniPC"]


@pytest.fixture(scope="module")
def generator(tiny_model: str) -> SDXLGenerator:
    return SDXLGenerator(tiny_model, "cpu")


def run(generator: SDXLGenerator, sampler: str, steps: int = 6) -> Record:
    """Each step's (latents, denoised estimate), as the runner's latents callback gets them."""
    job = Job.model_validate(
        {"prompt": "a fox", "id": "j", "owner": "o", "width": 64, "height": 64, "steps": steps, "sampler": sampler}
    )
    record: Record = []
    generator.generate(job, [5], lambda step, total: None, lambda s, t, x, x0: record.append((x.clone(), x0.clone())))
    return record


def test_euler_estimate_is_the_x0_its_step_moved_towards(generator: SDXLGenerator) -> None:
    """Euler's step is x' = x + (σ' - σ) (x - x0) / σ: the estimate is exactly the x0 that step used."""
    record = run(generator, "Euler")
    sigmas = generator.pipe.scheduler.sigmas
    for i in range(1, len(record)):
        before, (after, x0) = record[i - 1][0], record[i]
        expected = before + (sigmas[i + 1] - sigmas[i]) / sigmas[i] * (before - x0)
        torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(x0, before)  # not the noisy latents


@pytest.mark.parametrize("sampler", X0_SAMPLERS)
def test_the_estimate_is_a_clean_image_the_latents_reach_at_the_end(generator: SDXLGenerator, sampler: str) -> None:
    record = run(generator, sampler)
    latents, x0 = record[0]
    assert not torch.allclose(latents, x0)  # early on, the estimate is not the noisy latents
    final_latents, final_x0 = record[-1]
    torch.testing.assert_close(final_x0, final_latents, rtol=1e-3, atol=1e-3)  # the last step lands on it


def test_a_scheduler_without_an_estimate_previews_its_latents(generator: SDXLGenerator) -> None:
    assert all(torch.equal(latents, x0) for latents, x0 in run(generator, "PLMS"))


def test_the_linear_map_gives_the_sdxl_colours() -> None:
    latents = torch.zeros(1, 4, 4, 4)
    assert latents_to_image(latents, 32, 32).getpixel((5, 5)) == (141, 125, 127)  # the bias alone
    latents[0, 0] = 1.0  # channel 0: (0.3651, 0.4232, 0.4341) + bias
    assert latents_to_image(latents, 32, 32).getpixel((5, 5)) == (188, 179, 183)
    latents[0, 0] = 100.0  # far out of range: saturated, not wrapped
    assert latents_to_image(latents, 32, 32).getpixel((5, 5)) == (255, 255, 255)


def test_previews_stay_small_and_few() -> None:
    data = preview_event_data(torch.randn(1, 4, 128, 96), 3, 30, 768, 1024)
    image = Image.open(io.BytesIO(base64.b64decode(data["image"])))
    assert (data["width"], data["height"]) == image.size == (192, MAX_SIDE)
    interval = preview_interval(150)
    assert sum(wants_preview(step, 150, interval) for step in range(1, 151)) <= PREVIEWS_PER_JOB


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M SDE"])
def test_watching_the_estimate_keeps_a_seed_s_image(generator: SDXLGenerator, sampler: str) -> None:
    """The pipeline passes the seeded generator to a stochastic step only if the step's signature names it."""
    job = Job.model_validate(
        {"prompt": "a fox", "id": "j", "owner": "o", "width": 64, "height": 64, "steps": 4, "sampler": sampler}
    )
    [watched] = generator.generate(job, [7], lambda step, total: None, lambda s, t, x, x0: None)
    [unwatched] = generator.generate(job, [7], lambda step, total: None)
    assert watched.tobytes() == unwatched.tobytes()


def test_base_and_refiner_each_give_their_own_estimate(tiny_model: str, tmp_path: Path) -> None:
    generator = SDXLGenerator(tiny_model, "cpu", refiner=str(save_tiny_refiner(tmp_path)))
    job = Job.model_validate(
        {"prompt": "a fox", "id": "j", "owner": "o", "width": 64, "height": 64, "steps": 6, "sampler": "DPM++ 2M",
         "refiner": "refiner"}
    )
    record: Record = []
    generator.generate(job, [5], lambda step, total: None, lambda s, t, x, x0: record.append((x.clone(), x0.clone())))
    assert generator.refiner is not None and generator.refiner.num_timesteps > 0  # the refiner had its share
    assert len(record) == 6 and all(not torch.allclose(x, x0) for x, x0 in record[:-1])
    torch.testing.assert_close(record[-1][1], record[-1][0], rtol=1e-3, atol=1e-3)  # the refiner's last step
