"""Refiner, safety checker and PNG infotext with the real diffusers code and tiny offline models."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from contract.infotext import infotext
from contract.job import Job, JobSpec
from gpu_runner.encoding import encode_image
from gpu_runner.pipeline import SDXLGenerator
from gpu_runner.safety import SafetyChecker
from gpu_runner.steps import user_steps
from gpu_runner.tiny_checker import save_tiny_checker
from gpu_runner.tiny_model import save_tiny_refiner


@pytest.fixture(scope="module")
def refiner_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_refiner(tmp_path_factory.mktemp("refiner"))


@pytest.fixture(scope="module")
def checker_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """flag everything → its folder, flag nothing → its folder."""
    return {flag: save_tiny_checker(tmp_path_factory.mktemp(f"checker-{flag}"), flag) for flag in (True, False)}


@pytest.fixture(scope="module")
def generator(tiny_model: str, refiner_dir: Path, checker_dirs: dict[bool, Path]) -> SDXLGenerator:
    return SDXLGenerator(tiny_model, "cpu", refiner=str(refiner_dir), safety_checker=str(checker_dirs[True]))


def job(**changes: object) -> Job:
    fields: dict[str, object] = {"prompt": "a fox", "id": "j", "owner": "o", "width": 64, "height": 64, "steps": 5}
    return Job(**{**fields, **changes})  # type: ignore[arg-type]


def png(image: Image.Image) -> bytes:
    return encode_image(image, "png")


def test_the_refiner_loads_with_the_real_loader_and_shares_vae_and_encoder_2(generator: SDXLGenerator) -> None:
    refiner = generator.refiner
    assert refiner is not None
    assert refiner.vae is generator.pipe.vae and refiner.text_encoder_2 is generator.pipe.text_encoder_2
    assert refiner.text_encoder is None and refiner.config.requires_aesthetics_score is True
    assert refiner.unet.config.projection_class_embeddings_input_dim == 72


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "DPM++ 2M", "Heun", "DPM2 a"])
def test_base_and_refiner_report_user_steps_once_each_out_of_one_total(generator: SDXLGenerator, sampler: str) -> None:
    steps: list[tuple[int, int]] = []
    generator.generate(
        job(sampler=sampler, refiner="refiner", refiner_switch_at=0.6), [3], lambda s, t: steps.append((s, t))
    )
    order = generator.pipe.scheduler.order
    assert generator.refiner is not None
    base_ran, refiner_ran = generator.pipe.num_timesteps, generator.refiner.num_timesteps
    assert base_ran > 0 and refiner_ran > 0  # both experts denoised
    total = user_steps(base_ran, order) + user_steps(refiner_ran, order)
    assert steps == [(step, total) for step in range(1, total + 1)]
    # A1111 user steps: the requested count, plus one where a second-order pair must not be split.
    assert total in (5, 6) if order == 2 else total == 5


def test_the_switch_point_decides_how_much_each_expert_denoises(generator: SDXLGenerator) -> None:
    assert generator.refiner is not None
    split = {}
    for switch in (0.3, 0.9):
        generator.generate(job(steps=10, refiner="refiner", refiner_switch_at=switch), [1], lambda s, t: None)
        split[switch] = (generator.pipe.num_timesteps, generator.refiner.num_timesteps)
    assert split[0.3][0] < split[0.9][0] and split[0.3][1] > split[0.9][1]
    assert sum(split[0.3]) == sum(split[0.9]) == 10


def test_the_refiner_changes_the_image_and_stays_deterministic(generator: SDXLGenerator) -> None:
    refined = [png(generator.generate(job(refiner="refiner"), [8], lambda s, t: None)[0]) for _ in range(2)]
    [plain] = generator.generate(job(), [8], lambda s, t: None)
    assert refined[0] == refined[1]
    assert refined[0] != png(plain)


def test_the_refiner_takes_several_images_with_their_own_seeds(generator: SDXLGenerator) -> None:
    images = generator.generate(job(refiner="refiner", num_images=2, width=72), [4, 5], lambda s, t: None)
    assert [i.size for i in images] == [(72, 64), (72, 64)]
    assert png(images[0]) != png(images[1])


def test_a_checker_that_flags_everything_blacks_out_every_image(generator: SDXLGenerator) -> None:
    images = generator.generate(job(num_images=2), [1, 2], lambda s, t: None)
    assert all(image.getextrema() != ((0, 0),) * 3 for image in images)  # noise, not black, before the check
    checked, flags = generator.check_safety(images)
    assert flags == [True, True]
    assert [(i.size, i.getextrema()) for i in checked] == [((64, 64), ((0, 0),) * 3)] * 2


def test_a_checker_that_flags_nothing_keeps_the_images(
    generator: SDXLGenerator, checker_dirs: dict[bool, Path]
) -> None:
    images = generator.generate(job(), [1], lambda s, t: None)
    checked, flags = SafetyChecker(str(checker_dirs[False]), "cpu", generator.pipe.dtype).check(images)
    assert flags == [False]
    assert png(checked[0]) == png(images[0])


def test_without_a_checker_there_is_nothing_to_check_with(tiny_model: str) -> None:
    plain = SDXLGenerator(tiny_model, "cpu")
    with pytest.raises(RuntimeError, match="no safety checker"):
        plain.check_safety([Image.new("RGB", (8, 8))])
    with pytest.raises(RuntimeError, match="no refiner"):
        plain.generate(job(refiner="refiner"), [1], lambda s, t: None)


def test_png_carries_the_a1111_infotext_in_its_parameters_chunk() -> None:
    spec = JobSpec(
        prompt="a fox, at night: ünïcode", negative_prompt="blur", width=64, height=64, steps=5, refiner="refiner"
    ).model_dump(mode="json")
    text = infotext(spec, 42, "sdxl-base")
    image = Image.open(io.BytesIO(encode_image(Image.new("RGB", (64, 64)), "png", text)))
    assert image.text["parameters"] == text  # type: ignore[attr-defined]
    assert text.startswith("a fox, at night: ünïcode\nNegative prompt: blur\nSteps: 5, ")
    assert "Seed: 42" in text and "Model: sdxl-base" in text and "Refiner: refiner, Refiner switch at: 0.8" in text
    jpeg = Image.open(io.BytesIO(encode_image(Image.new("RGB", (64, 64)), "jpeg", text)))
    assert "parameters" not in jpeg.info
