"""LoRA adapters: A1111's prompt tags into `loras`, the LoRA folder, and adapters applied per pipeline call on the
real tiny pipeline (tiny LoRAs built offline, loaded with diffusers' PEFT integration). No mocks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from contract.blobs import open_blob_store
from contract.errors import InvalidField, UnknownName
from contract.job import Job, JobSpec, LoraSpec
from contract.loras import LoraFolder
from contract.serialization import decode, encode
from contract.settings import Settings
from gpu_runner import prompts
from gpu_runner.loras import LoraLibrary
from gpu_runner.pipeline import BatchItem, SDXLGenerator
from gpu_runner.tiny_lora import save_tiny_lora
from service import loras_api
from service.auth import ApiKeys
from service.errors import validated
from service.kafka_link import KafkaLink
from service.state import AppState

KEY = "lora-test-key"
Pixels = np.ndarray  # an image as ints, to subtract


def spec(prompt: str, **fields: object) -> JobSpec:
    return JobSpec.model_validate({"prompt": prompt, **fields})


# Tags ------------------------------------------------------------------------------------------------------------


def test_tags_leave_the_prompt_for_loras() -> None:
    job = spec("a cat <lora:ink:0.6>, oil painting <lora:grain>")
    assert job.prompt == "a cat , oil painting "  # removed as A1111 removes them, spaces left
    assert job.loras == (LoraSpec(name="ink", weight=0.6), LoraSpec(name="grain", weight=1.0))


@pytest.mark.parametrize(("tag", "weight"), [("<lora:ink:-0.5>", -0.5), ("<lora:ink: 1.25 >", 1.25),
                                             ("<lora:ink:2>", 2.0), ("<lora:ink>", 1.0), ("<lora:ink:.3>", 0.3)])
def test_tag_weights(tag: str, weight: float) -> None:
    assert spec(f"x {tag}").loras == (LoraSpec(name="ink", weight=weight),)


def test_tags_join_the_explicit_loras() -> None:
    job = spec("a <lora:grain:0.2>", loras=[{"name": "ink", "weight": 0.5}])
    assert [(lora.name, lora.weight) for lora in job.loras] == [("ink", 0.5), ("grain", 0.2)]


def test_the_same_lora_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="each LoRA may be named once"):
        spec("a <lora:ink:0.2>", loras=[{"name": "ink"}])
    with pytest.raises(ValueError, match="each LoRA may be named once"):
        spec("a <lora:ink> <lora:ink:2>")


@pytest.mark.parametrize(("prompt", "rule"), [
    ("a <lora:ink:strong>", "<lora:ink:strong>: the weight must be a number"),
    ("a <lora:ink:0.5:0.7>", "<lora:ink:0.5:0.7>: takes one weight"),
    ("a <lora:ink:9>", "<lora:ink:9>: weight: Input should be less than or equal to 4"),
    ("a <lora:../secret:1>", "<lora:../secret:1>: the name must be a LoRA file's name"),
    ("a <lora::1>", "<lora::1>: the name must be a LoRA file's name"),
])
def test_a_malformed_tag_is_refused_naming_the_prompt(prompt: str, rule: str) -> None:
    with pytest.raises(InvalidField) as refused:
        validated(Job, {"prompt": prompt, "id": "j", "owner": "o"})
    assert refused.value.field == "prompt" and refused.value.rule.startswith(rule)


def test_prompts_without_tags_are_untouched() -> None:
    for prompt in ("a <b>lighthouse</b>", "(a:1.2) <lora", "lora:ink:1", "<LORA:ink>"):
        assert spec(prompt).prompt == prompt and spec(prompt).loras == ()


def test_a_job_from_kafka_keeps_its_loras() -> None:
    """The record carries the tag-free prompt and the loras: read back (runner, API), nothing changes."""
    job = Job.model_validate({"prompt": "a <lora:ink:0.7> b", "id": "j", "owner": "o"})
    again = decode(Job, encode(job))
    assert again == job and again.prompt == "a  b"


# The folder ------------------------------------------------------------------------------------------------------


def test_the_folder_lists_safetensors_files_by_name(tmp_path: Path) -> None:
    for name in ("zebra.safetensors", "ink.safetensors", "notes.txt", ".hidden.safetensors", "bad name.safetensors"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.safetensors").mkdir()
    folder = LoraFolder(tmp_path)
    assert folder.names() == ("ink", "zebra")
    assert folder.unknown(["ink", "nope", "zebra"]) == ["nope"]
    assert folder.problem([LoraSpec(name="ink")]) is None
    assert folder.problem([LoraSpec(name="nope")]) == ("loras", "unknown LoRA 'nope'; available: ink, zebra")
    assert LoraFolder(tmp_path / "missing").names() == ()
    assert LoraFolder(tmp_path / "missing").problem([LoraSpec(name="ink")]) == (
        "loras", "unknown LoRA 'ink'; no LoRAs are installed (EASEL_LORA_DIR)"
    )


def test_the_folder_comes_from_the_settings(tmp_path: Path) -> None:
    assert LoraFolder.from_settings(Settings(home=tmp_path)).path == tmp_path / "loras"
    assert LoraFolder.from_settings(Settings(home=tmp_path, lora_dir="/srv/loras")).path == Path("/srv/loras")


def test_a1111_lists_the_loras(tmp_path: Path) -> None:
    save_tiny_lora(tmp_path, "ink")
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    settings = Settings(home=tmp_path, lora_dir=str(tmp_path), api_keys=(KEY,))
    app = Starlette(routes=[Route("/sdapi/v1/loras", loras_api.loras, methods=["GET"])])
    app.state.easel = AppState(settings, ApiKeys(settings.all_keys), KafkaLink(settings), open_blob_store(settings))
    with TestClient(app) as client:
        listed = client.get("/sdapi/v1/loras", auth=("any", KEY)).json()
    assert [entry["name"] for entry in listed] == ["broken", "ink"]
    ink = listed[1]
    assert ink["alias"] == "ink" and ink["path"] == "ink.safetensors"  # the file, not the server's folders
    assert isinstance(ink["metadata"], dict) and listed[0]["metadata"] == {}


# In the pipeline -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    save_tiny_lora(folder, "ink", seed=0)
    save_tiny_lora(folder, "grain", seed=1)
    save_tiny_lora(folder, "wording", seed=2, text_encoders=True)
    return folder


@pytest.fixture(scope="module")
def generator(tiny_model: str) -> SDXLGenerator:
    return SDXLGenerator(tiny_model, "cpu")


@pytest.fixture(scope="module")
def library(lora_dir: Path) -> LoraLibrary:
    return LoraLibrary(LoraFolder(lora_dir))


def image(generator: SDXLGenerator, library: LoraLibrary, loras: Sequence[LoraSpec], seed: int = 5) -> Pixels:
    """One image through the tiny pipeline with `loras` applied, as the pipeline will call the library."""
    job = Job(id="j", owner="o", prompt="a fox", width=64, height=64, steps=4)

    def generate() -> Pixels:
        with library.applied(generator.pipe, loras):
            [picture] = generator.generate(job, [seed], lambda step, total: None)
        return np.asarray(picture).astype(int)

    return generator.call(generate)


def test_a_lora_changes_the_image(generator: SDXLGenerator, library: LoraLibrary) -> None:
    plain = image(generator, library, ())
    inked = image(generator, library, [LoraSpec(name="ink")])
    assert np.abs(inked - plain).mean() > 3
    grained = image(generator, library, [LoraSpec(name="grain")])
    assert np.abs(grained - inked).mean() > 3  # another LoRA, another image
    both = image(generator, library, [LoraSpec(name="ink"), LoraSpec(name="grain")])
    assert np.abs(both - inked).mean() > 1 and np.abs(both - grained).mean() > 1
    assert np.array_equal(image(generator, library, [LoraSpec(name="ink")]), inked)  # the same job, the same image


def test_the_weight_scales_it(generator: SDXLGenerator, library: LoraLibrary) -> None:
    plain = image(generator, library, ())
    off = image(generator, library, [LoraSpec(name="ink", weight=0.0)])
    assert np.abs(off - plain).max() <= 1  # weight 0 is the plain model (rounding aside)
    half = np.abs(image(generator, library, [LoraSpec(name="ink", weight=0.5)]) - plain).mean()
    full = np.abs(image(generator, library, [LoraSpec(name="ink", weight=1.0)]) - plain).mean()
    assert 0 < half < full


def test_nothing_leaks_into_the_next_call(tiny_model: str, lora_dir: Path) -> None:
    generator = SDXLGenerator(tiny_model, "cpu")  # a pipeline no LoRA was ever loaded into
    library = LoraLibrary(LoraFolder(lora_dir))
    pristine = image(generator, library, ())
    image(generator, library, [LoraSpec(name="ink", weight=1.5), LoraSpec(name="wording", weight=0.8)])
    after = image(generator, library, ())
    # Loaded but off: the plain model, up to a rounding step where peft's wrapped layers compute in another order.
    assert np.abs(after - pristine).max() <= 1 and np.abs(after - pristine).mean() < 0.01
    assert np.array_equal(image(generator, library, ()), after)
    # Nor does a LoRA's weight stay for the next job that names it at another.
    grain_after_ink = image(generator, library, [LoraSpec(name="grain", weight=0.5)])
    image(generator, library, [LoraSpec(name="ink", weight=2.0), LoraSpec(name="grain", weight=1.0)])
    assert np.array_equal(image(generator, library, [LoraSpec(name="grain", weight=0.5)]), grain_after_ink)


def test_text_encoder_weights_shape_the_prompt_embeddings(generator: SDXLGenerator, library: LoraLibrary) -> None:
    """Prompts are encoded inside `applied`: compel's encoders hold the pipeline's own text encoders, whose layers
    the LoRA's text-encoder weights were injected into."""

    def embeddings(loras: Sequence[LoraSpec]) -> torch.Tensor:
        with library.applied(generator.pipe, loras):
            embeds: torch.Tensor = prompts.encode_prompts(generator.pipe, "a (fox:1.2)", "", 1, 5.0)["prompt_embeds"]
            return embeds

    plain = generator.call(embeddings, ())
    assert torch.equal(generator.call(embeddings, [LoraSpec(name="ink")]), plain)  # UNet weights only
    worded = generator.call(embeddings, [LoraSpec(name="wording")])
    assert not torch.allclose(worded, plain)
    assert torch.equal(generator.call(embeddings, ()), plain)  # off again after the block


def test_adapters_loaded_through_the_base_shape_img2img(generator: SDXLGenerator, library: LoraLibrary) -> None:
    """The img2img and inpainting pipelines share the base's modules (from_pipe): the base's adapters are theirs."""
    job = Job(id="j", owner="o", prompt="a fox", width=64, height=64, steps=6, init_image="j/init.png")
    init = Image.new("RGB", (64, 64), (120, 90, 60))

    def img2img(loras: Sequence[LoraSpec]) -> Pixels:
        with library.applied(generator.pipe, loras):
            [[picture]] = generator.generate_batch([BatchItem(job, [5], init=init)], lambda step, total: None)
        return np.asarray(picture).astype(int)

    plain = generator.call(img2img, ())
    assert np.abs(generator.call(img2img, [LoraSpec(name="ink")]) - plain).mean() > 3
    assert np.abs(generator.call(img2img, ()) - plain).max() <= 1


def test_an_unknown_lora_is_refused_naming_loras(generator: SDXLGenerator, library: LoraLibrary) -> None:
    with pytest.raises(UnknownName) as refused:
        image(generator, library, [LoraSpec(name="ink"), LoraSpec(name="nope")])
    assert refused.value.field == "loras" and "'nope'" in refused.value.rule and "ink" in refused.value.rule


def test_a_file_that_does_not_load_fails_the_job_not_the_runner(tiny_model: str, tmp_path: Path) -> None:
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    save_tiny_lora(tmp_path, "ink")
    generator = SDXLGenerator(tiny_model, "cpu")
    library = LoraLibrary(LoraFolder(tmp_path))
    with pytest.raises(InvalidField, match="'broken' does not load") as refused:
        image(generator, library, [LoraSpec(name="broken")])
    assert refused.value.field == "loras" and library.loaded == ()
    plain = image(generator, library, ())
    assert np.abs(image(generator, library, [LoraSpec(name="ink")]) - plain).mean() > 3  # the runner goes on


def test_loaded_adapters_are_kept_and_the_least_recently_used_unloaded(tiny_model: str, tmp_path: Path) -> None:
    names = [f"style{i}" for i in range(9)]
    for seed, name in enumerate(names):
        save_tiny_lora(tmp_path, name, seed=seed)
    generator = SDXLGenerator(tiny_model, "cpu")
    library = LoraLibrary(LoraFolder(tmp_path), capacity=8)

    def adapters() -> list[str]:
        return sorted(generator.pipe.get_list_adapters().get("unet", []))

    first = image(generator, library, [LoraSpec(name="style0")])
    for name in names[1:8]:
        image(generator, library, [LoraSpec(name=name)])
    image(generator, library, [LoraSpec(name="style0")])  # used again: now the most recent
    assert library.loaded == (*names[1:8], "style0") and adapters() == sorted(names[:8])
    image(generator, library, [LoraSpec(name="style8")])
    assert library.loaded == (*names[2:8], "style0", "style8") and "style1" not in adapters()
    assert adapters() == sorted(library.loaded)
    assert np.array_equal(image(generator, library, [LoraSpec(name="style0")]), first)  # kept: the same image
    image(generator, library, [LoraSpec(name="style1")])  # evicted: loaded again
    assert library.loaded[-1] == "style1" and len(adapters()) == 8


def test_a_replaced_file_is_loaded_again(tiny_model: str, tmp_path: Path) -> None:
    save_tiny_lora(tmp_path, "ink", seed=0)
    generator = SDXLGenerator(tiny_model, "cpu")
    library = LoraLibrary(LoraFolder(tmp_path))
    before = image(generator, library, [LoraSpec(name="ink")])
    path = save_tiny_lora(tmp_path, "ink", seed=3)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a newer file, surely
    after = image(generator, library, [LoraSpec(name="ink")])
    assert np.abs(after - before).mean() > 1 and library.loaded == ("ink",)


def test_capacity_holds_a_job_s_loras(lora_dir: Path) -> None:
    with pytest.raises(ValueError, match="below the 8 LoRAs"):
        LoraLibrary(LoraFolder(lora_dir), capacity=4)
