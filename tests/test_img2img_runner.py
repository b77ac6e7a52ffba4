"""img2img and inpainting in the runner, on the tiny model: the pipelines that share the base's components, the
steps they really run, the input images read from the blob store (and the jobs that name bad ones), batching.

The tiny model's VAE is random: decoding an encoded image gives nothing like it back, so how close an img2img
result stays to its init image is measured on the latents (where the VAE is not in the way); inpainting's
unmasked pixels are compared in pixels, since the init image is laid back over them.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageChops, ImageDraw
from pydantic import ValidationError

from contract.blobs import LocalBlobStore, input_image_key, open_blob_store
from contract.control import ControlCommand
from contract.errors import InvalidField
from contract.events import EventType
from contract.input_images import as_png
from contract.job import Job, denoising_steps
from contract.keys import key_id
from contract.serialization import encode
from contract.settings import Settings
from contract.topics import Topics
from gpu_runner.batching import batch_key
from gpu_runner.encoding import encode_image
from gpu_runner.input_images import InputImages, fit_init, fit_mask, read_input_images
from gpu_runner.pipeline import BatchItem, SDXLGenerator
from tests.kafka_io import Records, events_of, job_events, produce, read_topic
from tests.processes import Stack

SIZE = 96


@pytest.fixture(scope="module")
def generator(tiny_model: str) -> SDXLGenerator:
    return SDXLGenerator(tiny_model, "cpu")


def job(**changes: object) -> Job:
    fields: dict[str, object] = {
        "prompt": "a fox", "id": "j", "owner": "o", "width": SIZE, "height": SIZE, "steps": 10,
        "init_image": "j/init.png", "strength": 0.5,
    }
    return Job.model_validate({**fields, **changes})


def init_picture(size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    """Something with structure: a gradient with a dark disc."""
    image = Image.radial_gradient("L").convert("RGB").resize(size)
    ImageDraw.Draw(image).ellipse((size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2), fill=(20, 40, 200))
    return image


def centre_mask(size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    """White (repaint) in the middle third, black (keep) around it."""
    mask = Image.new("L", size)
    mask.paste(255, (size[0] // 3, size[1] // 3, 2 * size[0] // 3, 2 * size[1] // 3))
    return mask


def run(
    generator: SDXLGenerator, spec: Job, seeds: list[int], init: Image.Image | None = None,
    mask: Image.Image | None = None,
) -> tuple[list[Image.Image], list[tuple[int, int]], torch.Tensor]:
    """The images, the step reports and the last step's latents."""
    steps: list[tuple[int, int]] = []
    last: list[torch.Tensor] = []
    init = fit_init(init or init_picture(), spec.width, spec.height)
    fitted_mask = fit_mask(mask, spec.width, spec.height, spec.mask_blur) if mask is not None else None
    item = BatchItem(spec, seeds, lambda step, total, x, x0: last.append(x.clone()), init, fitted_mask)
    [images] = generator.generate_batch([item], lambda step, total: steps.append((step, total)))
    return images, steps, last[-1]


def init_latents(generator: SDXLGenerator, spec: Job) -> torch.Tensor:
    pipe = generator.pipe
    with torch.no_grad():
        pixels = pipe.image_processor.preprocess(fit_init(init_picture(), spec.width, spec.height))
        latents: torch.Tensor = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    return latents


def most_apart(a: Image.Image, b: Image.Image, box: tuple[int, int, int, int] | None = None) -> int:
    difference = ImageChops.difference(a.convert("RGB"), b.convert("RGB"))
    bands: tuple[tuple[int, int], ...] = (difference.crop(box) if box else difference).getextrema()  # type: ignore[assignment]
    return max(high for _, high in bands)


# The generator -----------------------------------------------------------------------------------------------


def test_img2img_shares_the_loaded_components(generator: SDXLGenerator) -> None:
    for pipe in (generator.img2img, generator.inpaint):
        assert pipe.unet is generator.pipe.unet and pipe.vae is generator.pipe.vae
        assert pipe.text_encoder_2 is generator.pipe.text_encoder_2
    assert generator.pipe.unet.dtype == torch.float32


def test_img2img_makes_the_jobs_size_from_an_init_image_of_another(generator: SDXLGenerator) -> None:
    images, _, _ = run(generator, job(width=128, height=64), [1, 2], init=init_picture((50, 70)))
    assert [image.size for image in images] == [(128, 64), (128, 64)]


def test_img2img_same_seed_same_pixels(generator: SDXLGenerator) -> None:
    def png(seed: int) -> bytes:
        return encode_image(run(generator, job(), [seed])[0][0], "png")

    assert png(5) == png(5)
    assert png(5) != png(6)


def test_a_lower_strength_stays_closer_to_the_init_image(generator: SDXLGenerator) -> None:
    original = init_latents(generator, job())
    apart = {}
    for strength in (0.3, 0.9, 1.0):
        images, _, latents = run(generator, job(strength=strength), [3])
        apart[strength] = (images[0], float((latents - original).abs().mean()))
    assert most_apart(apart[1.0][0], apart[0.3][0]) > 0
    assert apart[0.3][1] < apart[0.9][1] < apart[1.0][1], {s: d for s, (_, d) in apart.items()}


@pytest.mark.parametrize(
    ("sampler", "steps", "strength"),
    [("Euler", 10, 0.5), ("Euler", 20, 0.29), ("DPM++ 2M", 7, 0.75), ("Heun", 6, 0.5), ("DPM2", 5, 0.6)],
)
def test_progress_counts_the_steps_that_run(
    generator: SDXLGenerator, sampler: str, steps: int, strength: float
) -> None:
    calls: list[int] = []
    hook = generator.pipe.unet.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        _, reports, _ = run(generator, job(sampler=sampler, steps=steps, strength=strength), [1])
    finally:
        hook.remove()
    ran = int(steps * strength)
    assert ran == denoising_steps(steps, strength)
    assert reports == [(step, ran) for step in range(1, ran + 1)]
    order = 2 if sampler in ("Heun", "DPM2") else 1
    # One UNet call per timestep (the prompt and the negative in one batch): a second-order sampler's pairs
    # make about two per step.
    assert order * ran - 1 <= len(calls) <= order * ran


def test_inpainting_keeps_what_the_mask_keeps_and_repaints_the_rest(generator: SDXLGenerator) -> None:
    spec = job(mask_image="j/mask.png", mask_blur=0, strength=0.9)
    init = fit_init(init_picture(), SIZE, SIZE)
    [image], reports, _ = run(generator, spec, [4], mask=centre_mask())
    assert image.size == (SIZE, SIZE) and reports[-1] == (9, 9)
    third = SIZE // 3
    assert most_apart(image, init, (0, 0, SIZE, third)) <= 1  # the band above the mask: the init image's pixels
    assert most_apart(image, init, (third + 2, third + 2, 2 * third - 2, 2 * third - 2)) > 32  # repainted


def test_a_blurred_mask_feathers_the_seam(generator: SDXLGenerator) -> None:
    sharp, _, _ = run(generator, job(mask_image="j/mask.png", mask_blur=0), [4], mask=centre_mask())
    soft, _, _ = run(generator, job(mask_image="j/mask.png", mask_blur=6), [4], mask=centre_mask())
    init = fit_init(init_picture(), SIZE, SIZE)
    third = SIZE // 3
    just_outside = (third - 4, third, third - 1, 2 * third)  # a strip left of the mask
    assert most_apart(sharp[0], init, just_outside) <= 1
    assert most_apart(soft[0], init, just_outside) > 1


def test_only_masked_repaints_the_mask_region_at_full_resolution(generator: SDXLGenerator) -> None:
    spec = job(mask_image="j/mask.png", mask_blur=0, mask_crop_padding=4, width=128, height=96)
    small = Image.new("L", (128, 96))
    small.paste(255, (8, 8, 40, 40))
    [image], reports, _ = run(generator, spec, [2], mask=small)
    init = fit_init(init_picture(), 128, 96)
    assert image.size == (128, 96) and reports[-1] == (5, 5)
    assert most_apart(image, init, (64, 48, 128, 96)) <= 1  # far from the mask: kept
    assert most_apart(image, init, (12, 12, 36, 36)) > 32


def test_jobs_sharing_an_init_image_batch_as_if_alone(generator: SDXLGenerator) -> None:
    first, second = job(id="a"), job(id="b", prompt="a cat")
    init = fit_init(init_picture(), SIZE, SIZE)
    both = generator.generate_batch([BatchItem(first, [4], init=init), BatchItem(second, [5], init=init)],
                                    lambda step, total: None)
    [alone], _, _ = run(generator, second, [5])
    assert most_apart(both[1][0], alone) <= 3  # batched and single runs are close (diffusers allows 3e-3)


# Input images --------------------------------------------------------------------------------------------------


def test_the_mask_is_blurred_then_fitted_and_an_alpha_channel_is_the_mask() -> None:
    assert fit_mask(centre_mask((30, 30)), 60, 90, 0).size == (60, 90)
    blurred = fit_mask(centre_mask(), SIZE, SIZE, 4)
    assert 0 < blurred.getpixel((SIZE // 3 - 2, SIZE // 2)) < 255  # type: ignore[operator]
    painted = Image.new("RGBA", (SIZE, SIZE), (255, 255, 255, 0))
    painted.paste((0, 0, 0, 255), (0, 0, 10, 10))
    assert fit_mask(painted, SIZE, SIZE, 0).getpixel((5, 5)) == 255
    assert fit_mask(painted, SIZE, SIZE, 0).getpixel((50, 50)) == 0
    transparent = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert fit_init(transparent, 16, 16).getpixel((3, 3)) == (255, 255, 255)  # over white, as A1111


async def test_input_images_come_from_the_blob_store_checked(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path)
    limits = {"max_bytes": 10**6, "max_pixels": 512 * 512}
    spec = job(id="in", init_image="in/init.png", mask_image="in/mask.png", width=96, height=72)
    with pytest.raises(InvalidField, match=r"^init_image: no stored image under 'in/init.png'"):
        await read_input_images(spec, blobs, **limits)
    await blobs.put("in/init.png", as_png(init_picture((80, 60))), "image/png")
    await blobs.put("in/mask.png", b"not a picture", "image/png")
    with pytest.raises(InvalidField, match=r"^mask_image: is not a PNG"):
        await read_input_images(spec, blobs, **limits)
    await blobs.put("in/mask.png", as_png(centre_mask((40, 40))), "image/png")
    with pytest.raises(InvalidField, match=r"^mask_image: is 40×40; it must be the init image's size, 80×60"):
        await read_input_images(spec, blobs, **limits)
    await blobs.put("in/mask.png", as_png(centre_mask((80, 60))), "image/png")
    inputs = await read_input_images(spec, blobs, **limits)
    assert inputs.init is not None and inputs.mask is not None
    assert (inputs.init.size, inputs.init.mode, inputs.mask.size, inputs.mask.mode) == ((96, 72), "RGB", (96, 72), "L")
    await blobs.put("in/mask.png", as_png(Image.new("L", (80, 60))), "image/png")
    only_masked = spec.model_copy(update={"mask_crop_padding": 8})
    assert (await read_input_images(only_masked, blobs, **limits)).mask is None  # blank: img2img, as A1111
    assert (await read_input_images(spec, blobs, **limits)).mask is not None  # the whole image: nothing repainted
    with pytest.raises(InvalidField, match=r"^init_image: is 80×60 pixels; at most 1000"):
        await read_input_images(spec, blobs, max_bytes=10**6, max_pixels=1000)
    assert await read_input_images(job(init_image=None, strength=None), blobs, **limits) == InputImages()


# Batching -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"init_image": "k/init.png"}, {"strength": 0.6}, {"mask_image": "j/mask.png"},
        {"init_image": None, "strength": None}, {"loras": [{"name": "ink", "weight": 0.5}]},
    ],
)
def test_jobs_with_other_input_images_or_loras_never_share_a_call(change: dict[str, object]) -> None:
    assert batch_key(job(**change)) != batch_key(job())


@pytest.mark.parametrize("change", [{"mask_blur": 8}, {"mask_crop_padding": 16}])
def test_mask_settings_part_inpainting_jobs(change: dict[str, object]) -> None:
    assert batch_key(job(mask_image="j/mask.png", **change)) != batch_key(job(mask_image="j/mask.png"))


def test_a_mask_blur_without_a_mask_parts_nothing() -> None:
    assert batch_key(job(mask_blur=8)) == batch_key(job())
    assert batch_key(job(init_image=None, strength=None, mask_blur=8)) == batch_key(job(init_image=None, strength=None))


def test_a_strength_that_runs_no_step_is_refused_by_the_contract() -> None:
    with pytest.raises(ValidationError, match=r"strength 0\.1 of 8 steps runs no denoising step"):
        job(steps=8, strength=0.1)  # 0.1 × 8 steps: not one step
    assert job(steps=8, strength=0.125).strength == 0.125


def test_loras_part_jobs_by_weight_and_order() -> None:
    one = [{"name": "ink", "weight": 0.5}, {"name": "oil", "weight": 1.0}]
    assert batch_key(job(loras=one)) == batch_key(job(id="other", loras=one))
    assert batch_key(job(loras=[{**one[0], "weight": 0.6}, one[1]])) != batch_key(job(loras=one))


# A real runner ------------------------------------------------------------------------------------------------


def direct_job(stack: Stack, **changes: object) -> dict[str, object]:
    job_id = f"img2img-{uuid.uuid4().hex[:12]}"
    return {
        "id": job_id, "owner": key_id(stack.key), "prompt": "written straight to Kafka", "width": 64, "height": 64,
        "steps": 8, "seed": 3, "init_image": input_image_key(job_id, "init"), **changes,
    }


async def store(stack: Stack, key: str, image: Image.Image) -> None:
    blobs = open_blob_store(Settings.from_env(stack.env))
    try:
        await blobs.put(key, as_png(image), "image/png")
    finally:
        await blobs.close()


@pytest.mark.slow
async def test_a_job_naming_a_missing_init_image_fails_and_the_runner_goes_on(stack: Stack) -> None:
    bootstrap, topics = stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix)
    missing = direct_job(stack)
    healthy = direct_job(stack, strength=0.5, preview=True)
    await store(stack, str(healthy["init_image"]), init_picture((64, 64)))
    for spec in (missing, healthy):
        await produce(bootstrap, topics.requests, spec, key=str(spec["id"]).encode())

    [failed] = await job_events(bootstrap, topics.events, str(missing["id"]))
    assert failed.type is EventType.FAILED
    assert failed.data["error"] == f"init_image: no stored image under '{missing['init_image']}'"

    events = await job_events(bootstrap, topics.events, str(healthy["id"]))
    assert events[-1].type is EventType.COMPLETED, events[-1]
    progress = [(e.data["step"], e.data["total"]) for e in events if e.type is EventType.PROGRESS]
    assert progress == [(step, 4) for step in range(1, 5)]
    assert any(e.type is EventType.PREVIEW for e in events)
    output = events[-1].data["outputs"][0]
    assert (output["width"], output["height"]) == (64, 64)


@pytest.mark.slow
async def test_a_cancelled_img2img_job_ends_cancelled(stack: Stack) -> None:
    bootstrap, topics = stack.env["EASEL_KAFKA_BOOTSTRAP"], Topics(stack.prefix)
    spec = direct_job(stack, steps=150, strength=1.0)
    spec["mask_image"] = input_image_key(str(spec["id"]), "mask")
    await store(stack, str(spec["init_image"]), init_picture((64, 64)))
    await store(stack, str(spec["mask_image"]), centre_mask((64, 64)))
    job_id = str(spec["id"])
    await produce(bootstrap, topics.requests, spec, key=job_id.encode())

    def running(records: Records) -> bool:
        return any(e.type is EventType.PROGRESS and e.data["step"] >= 2 for e in events_of(records, job_id))

    await read_topic(bootstrap, topics.events, running, timeout_s=120)
    await produce(bootstrap, topics.control, encode(ControlCommand(job_id=job_id, action="cancel")), job_id.encode())
    events = await job_events(bootstrap, topics.events, job_id, timeout_s=120)
    assert events[-1].type is EventType.CANCELLED
    assert max(e.data["step"] for e in events if e.type is EventType.PROGRESS) < 150
    assert [output["key"] for output in events[-1].data["outputs"]] == [f"{job_id}/0.png"]  # its partial image
    blobs = open_blob_store(Settings.from_env(stack.env))
    try:
        partial = await blobs.get(f"{job_id}/0.png")
    finally:
        await blobs.close()
    assert partial is not None and Image.open(io.BytesIO(partial)).size == (64, 64)
