"""The SDXL generator with the tiny model: sizes, seeds, step reports, every sampler."""

from __future__ import annotations

import pytest

from contract.job import Job
from contract.samplers import SAMPLERS, SCHEDULES, UNSUPPORTED_SCHEDULES
from gpu_runner.encoding import encode_image
from gpu_runner.pipeline import SDXLGenerator
from gpu_runner.samplers import UnsupportedSampler, build_scheduler


@pytest.fixture(scope="module")
def generator(tiny_model: str) -> SDXLGenerator:
    return SDXLGenerator(tiny_model, "cpu")


def job(**changes: object) -> Job:
    fields: dict[str, object] = {"prompt": "a fox", "id": "j", "owner": "o", "width": 72, "height": 64, "steps": 3}
    return Job(**{**fields, **changes})  # type: ignore[arg-type]


def test_images_have_the_requested_size(generator: SDXLGenerator) -> None:
    [image] = generator.generate(job(), [1], lambda step, total: None)
    assert image.size == (72, 64)


def test_same_seed_same_pixels_other_seed_other_pixels(generator: SDXLGenerator) -> None:
    def png(seed: int) -> bytes:
        return encode_image(generator.generate(job(), [seed], lambda s, t: None)[0], "png")

    assert png(5) == png(5)
    assert png(5) != png(6)


def test_several_images_use_their_own_seeds(generator: SDXLGenerator) -> None:
    images = generator.generate(job(num_images=2), [10, 11], lambda s, t: None)
    [alone] = generator.generate(job(), [11], lambda s, t: None)
    assert len(images) == 2
    assert encode_image(images[0], "png") != encode_image(images[1], "png")
    # Batched and single runs are close, not bitwise equal (diffusers allows 3e-3).
    assert max(abs(a - b) for a, b in zip(images[1].tobytes(), alone.tobytes(), strict=True)) <= 3


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_reports_each_user_step_once(generator: SDXLGenerator, sampler: str) -> None:
    steps: list[tuple[int, int]] = []
    generator.generate(job(sampler=sampler, steps=4), [1], lambda step, total: steps.append((step, total)))
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_scheduler_table_agrees_with_the_contract(generator: SDXLGenerator) -> None:
    config = generator.pipe.scheduler.config
    for sampler in SAMPLERS:
        for schedule in SCHEDULES:
            if schedule in UNSUPPORTED_SCHEDULES.get(sampler, ()):
                with pytest.raises(UnsupportedSampler):
                    build_scheduler(config, sampler, schedule)
            else:
                build_scheduler(config, sampler, schedule)


def test_a_raising_step_callback_stops_generation(generator: SDXLGenerator) -> None:
    class Stop(Exception):
        pass

    def stop_at_two(step: int, total: int) -> None:
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        generator.generate(job(steps=10), [1], stop_at_two)
