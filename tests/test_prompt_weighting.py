"""A1111 prompt weighting through compel (gpu_runner/prompts.py), on the tiny SDXL base and refiner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

from gpu_runner.prompts import encode_prompts, parse_weights, plain_text, stack
from gpu_runner.tiny_model import save_tiny_refiner

LONG_PROMPT = ", ".join(f"a red lighthouse number {i}" for i in range(40))


@pytest.fixture(scope="module")
def base(tiny_model: str) -> StableDiffusionXLPipeline:
    return StableDiffusionXLPipeline.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def refiner(tmp_path_factory: pytest.TempPathFactory) -> StableDiffusionXLImg2ImgPipeline:
    folder = save_tiny_refiner(Path(tmp_path_factory.mktemp("refiner")) / "refiner")
    return StableDiffusionXLImg2ImgPipeline.from_pretrained(str(folder))


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("a (cat:1.5) sleeps", [("a ", 1.0), ("cat", 1.5), (" sleeps", 1.0)]),
        ("((cat))", [("cat", pytest.approx(1.21))]),
        ("[cat]", [("cat", pytest.approx(1 / 1.1))]),
        ("(a [b] c:1.5)", [("a ", 1.5), ("b", pytest.approx(1.5 / 1.1)), (" c", 1.5)]),
        ("(open", [("open", pytest.approx(1.1))]),  # an unclosed bracket weighs the rest
        ("x) y", [("x) y", 1.0)]),  # a closing bracket with no opening one is text
        (r"a \(literal\) b", [("a (literal) b", 1.0)]),
        ("ratio 16:9", [("ratio 16:9", 1.0)]),
        ("(cat:1.0)", [("cat", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_a1111_syntax_reads_as_a1111_reads_it(prompt: str, expected: list[tuple[str, float]]) -> None:
    assert parse_weights(prompt) == expected


def test_plain_text_drops_the_syntax() -> None:
    assert plain_text("a ((cat:1.3)) on [a mat]") == "a cat on a mat"


def test_an_unweighted_prompt_encodes_exactly_as_diffusers_does(base: StableDiffusionXLPipeline) -> None:
    ours = encode_prompts(base, "a lighthouse", "fog", 2, 5.0)
    theirs = base.encode_prompt(
        prompt="a lighthouse", negative_prompt="fog", num_images_per_prompt=2, do_classifier_free_guidance=True
    )
    names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
    for name, value in zip(names, theirs, strict=True):
        assert torch.equal(ours[name], value), name
    empty_negative = encode_prompts(base, "a lighthouse", "", 1, 5.0)  # SDXL base: zeros, as diffusers gives
    assert torch.count_nonzero(empty_negative["negative_prompt_embeds"]) == 0


def test_weight_one_is_plain_text_and_emphasis_changes_the_embeddings(base: StableDiffusionXLPipeline) -> None:
    plain = encode_prompts(base, "a cat on a mat", "", 1, 5.0)["prompt_embeds"]
    assert torch.equal(encode_prompts(base, "a (cat:1.0) on a mat", "", 1, 5.0)["prompt_embeds"], plain)
    for weighted in ("a (cat:1.5) on a mat", "a ((cat)) on a mat", "a [cat] on a mat"):
        assert not torch.allclose(encode_prompts(base, weighted, "", 1, 5.0)["prompt_embeds"], plain), weighted


def test_a_long_prompt_is_chunked_not_truncated(base: StableDiffusionXLPipeline) -> None:
    assert len(base.tokenizer(LONG_PROMPT).input_ids) > 200
    encoded = encode_prompts(base, LONG_PROMPT, "blurry", 1, 5.0)
    tokens = encoded["prompt_embeds"].shape[1]
    assert tokens > 77 and tokens % 77 == 0
    assert encoded["negative_prompt_embeds"].shape == encoded["prompt_embeds"].shape  # padded to the same length
    short = encode_prompts(base, "a cat", "blurry", 1, 5.0)["prompt_embeds"]
    assert not torch.equal(encoded["prompt_embeds"][:, :77], short)


def test_the_embeddings_drive_the_base_and_the_refiner(
    base: StableDiffusionXLPipeline, refiner: StableDiffusionXLImg2ImgPipeline
) -> None:
    generator = torch.Generator().manual_seed(1)
    latents = base(**encode_prompts(base, LONG_PROMPT, "(blurry:1.3)", 2, 5.0), num_inference_steps=2, width=64,
                   height=64, denoising_end=0.5, output_type="latent", generator=generator).images
    encoded = encode_prompts(refiner, LONG_PROMPT, "(blurry:1.3)", 2, 5.0)
    assert encoded["prompt_embeds"].shape[-1] == refiner.text_encoder_2.config.hidden_size  # encoder 2 only
    images = refiner(**encoded, image=latents, num_inference_steps=2, denoising_start=0.5, generator=generator).images
    assert [image.size for image in images] == [(64, 64), (64, 64)]


def test_jobs_of_different_lengths_stack_into_one_batch(base: StableDiffusionXLPipeline) -> None:
    short, long = encode_prompts(base, "a cat", "fog", 1, 5.0), encode_prompts(base, LONG_PROMPT, "fog", 2, 5.0)
    batch = stack(base, [short, long])
    assert batch["prompt_embeds"].shape == (3, long["prompt_embeds"].shape[1], short["prompt_embeds"].shape[2])
    assert batch["pooled_prompt_embeds"].shape[0] == 3
    assert len(base(**batch, num_inference_steps=1, width=64, height=64).images) == 3


def test_without_guidance_there_are_no_negative_embeddings(base: StableDiffusionXLPipeline) -> None:
    encoded = encode_prompts(base, "a cat", "fog", 1, 1.0)
    assert encoded["negative_prompt_embeds"] is None and encoded["negative_pooled_prompt_embeds"] is None
