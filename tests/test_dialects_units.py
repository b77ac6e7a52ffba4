"""The dialect adapters as pure functions, table-first, with the seed documents' examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.errors import InvalidField
from contract.infotext import infotext
from contract.job import Job, JobSpec
from contract.lifecycle import queued_status
from contract.states import JobState, JobStatus
from dialects import a1111, modelslab, runpod, skidio
from dialects.samplers import resolve

SEED_001_INPUT = {
    "api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"},
    "payload": {
        "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0", "sd_vae": "sdxl_vae.safetensors"},
        "override_settings_restore_afterwards": True,
        "prompt": "an astronaut riding a horse", "negative_prompt": "", "seed": -1, "batch_size": 1, "steps": 30,
        "cfg_scale": 7, "width": 1024, "height": 1024, "sampler_name": "DPM++ 2M", "sampler_index": "DPM++ 2M",
        "scheduler": "karras", "restore_faces": False,
    },
}
SEED_002_BODY = {
    "key": "k",
    "prompt": "ultra realistic close up portrait ((beautiful pale cyberpunk female with heavy black eyeliner))",
    "negative_prompt": "bad quality", "width": "512", "height": "512", "safety_checker": False, "seed": None,
    "samples": 1, "base64": False, "webhook": None, "track_id": None,
}


@pytest.mark.parametrize(
    ("sampler", "scheduler", "expected"),
    [
        ("Euler a", None, ("Euler a", "automatic")),
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "karras")),
        ("DPM++ 2M SDE Exponential", None, ("DPM++ 2M SDE", "exponential")),
        ("DPM++ 2M", "Karras", ("DPM++ 2M", "karras")),
        ("DPM++ 2M karras", "exponential", ("DPM++ 2M", "exponential")),  # an explicit scheduler wins
        ("Euler", "SGM Uniform", ("Euler", "sgm_uniform")),
        (None, None, ("Euler", "automatic")),
    ],
)
def test_a1111_sampler_names_split_into_sampler_and_schedule(
    sampler: str | None, scheduler: str | None, expected: tuple[str, str]
) -> None:
    assert resolve(sampler, scheduler) == expected


@pytest.mark.parametrize(
    ("sampler", "scheduler", "field"), [("Warp", None, "sampler_name"), ("Euler", "wobbly", "scheduler")]
)
def test_unknown_sampler_or_schedule_names_the_valid_ones(sampler: str, scheduler: str | None, field: str) -> None:
    with pytest.raises(InvalidField) as error:
        resolve(sampler, scheduler)
    assert error.value.field == field
    assert "valid:" in error.value.rule


def test_a1111_payload_maps_to_a_job_with_a1111_defaults() -> None:
    fields = a1111.job_fields({"prompt": "a cat"}, ("default",))
    assert fields | {} == {
        "prompt": "a cat", "negative_prompt": "", "width": 512, "height": 512, "steps": 50, "guidance": 7.0,
        "sampler": "Euler", "schedule": "automatic", "seed": -1, "num_images": 1, "model": "default",
    }
    assert JobSpec(**fields)  # valid for the contract as it is
    assert a1111.job_fields({"prompt": "x", "batch_size": 2, "n_iter": 2}, ("default",))["num_images"] == 4


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"enable_hr": True}, "enable_hr"),
        ({"restore_faces": True}, "restore_faces"),
        ({"batch_size": 3, "n_iter": 2}, "batch_size"),
        ({"refiner_checkpoint": "sd_xl_refiner_1.0"}, "refiner_checkpoint"),
        ({"override_settings": {"sd_model_checkpoint": "other"}}, "override_settings.sd_model_checkpoint"),
        ({"batch_size": "two"}, "batch_size"),
    ],
)
def test_a1111_features_we_do_not_do_are_refused_by_name(payload: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidField) as error:
        a1111.job_fields({"prompt": "x", **payload}, ("default",))
    assert error.value.field == field


def test_runpod_tells_the_three_input_shapes_apart() -> None:
    assert runpod.shape_of(SEED_001_INPUT) == "a1111-api"
    assert runpod.shape_of({"prompt": "x", "steps": 30, "width": 1024}) == "a1111"
    assert runpod.shape_of({"prompt": "x", "num_inference_steps": 20, "guidance": 7.5}) == "public"


def test_runpod_seed_001_payload_uses_the_worker_defaults_and_policy() -> None:
    body = {"input": SEED_001_INPUT, "policy": {"executionTimeout": 120000, "ttl": 60000}}
    fields, shape = runpod.job_fields(body, ("default", "sd_xl_base_1.0"))
    assert shape == "a1111-api"
    assert (fields["sampler"], fields["schedule"], fields["steps"], fields["guidance"]) == ("DPM++ 2M", "karras", 30, 7)
    assert (fields["execution_timeout_s"], fields["ttl_s"]) == (120.0, 60.0)


def test_runpod_unsupported_endpoint_lists_the_supported_ones() -> None:
    body = {"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/extra-single-image"}, "payload": {}}}
    with pytest.raises(InvalidField, match="supported: sdapi/v1/txt2img, sdapi/v1/img2img"):
        runpod.job_fields(body, ("default",))


def test_runpod_img2img_takes_one_init_image_and_maps_a1111s_inpainting_fields() -> None:
    payload = {"prompt": "x", "init_images": ["<base64>"], "mask": "<mask>", "denoising_strength": 0.3,
               "mask_blur": 8, "inpaint_full_res_padding": 32, "inpainting_mask_invert": 1}
    wrapped = {"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"}, "payload": payload}}
    fields, shape = runpod.job_fields(wrapped, ("default",))
    assert shape == "a1111-api" and fields["steps"] == 20  # the worker's defaults, as for txt2img
    assert (fields["init_image"], fields["mask_image"], fields["strength"]) == ("<base64>", "<mask>", 0.3)
    assert (fields["mask_blur"], fields["mask_crop_padding"]) == (8, 32)
    paths, intake = runpod.images_of(wrapped["input"])
    assert paths["init_image"] == ("payload", "init_images", 0) and intake.invert_mask and intake.fill_masked
    plain, shape = runpod.job_fields({"input": payload}, ("default",))
    assert shape == "a1111" and plain["init_image"] == "<base64>"
    with pytest.raises(InvalidField, match=r"^init_images: must hold exactly one image; it holds 2"):
        runpod.job_fields({"input": {**payload, "init_images": ["a", "b"]}}, ("default",))


def test_runpod_public_shape_maps_its_field_names() -> None:
    fields, _ = runpod.job_fields(
        {"input": {"prompt": "A serene mountain landscape at sunset", "width": 1024, "height": 1024,
                   "num_inference_steps": 20, "guidance": 7.5}}, ("default",))
    assert fields == {"prompt": "A serene mountain landscape at sunset", "width": 1024, "height": 1024, "steps": 20,
                      "guidance": 7.5}
    with pytest.raises(InvalidField, match=r"input\.colour"):
        runpod.job_fields({"input": {"prompt": "x", "colour": "red"}}, ("default",))


def _status(**spec: object) -> JobStatus:
    job = Job(id="123", owner="o", created_at=1000.0, prompt="a fox", width=64, height=64, steps=4, **spec)  # type: ignore[arg-type]
    return queued_status(job, 1000.0)


def test_runpod_envelope_has_times_in_milliseconds() -> None:
    status = _status().model_copy(update={"state": JobState.COMPLETED, "started_at": 1000.5, "finished_at": 1002.0,
                                          "runner_id": "r1"})
    assert runpod.envelope(status, {"image_url": "u", "cost": 0}) == {
        "id": "123", "status": "COMPLETED", "delayTime": 500, "executionTime": 1500, "workerId": "r1",
        "output": {"image_url": "u", "cost": 0},
    }


def test_modelslab_seed_002_example_maps_with_numeric_strings() -> None:
    fields = modelslab.job_fields(SEED_002_BODY)
    assert (fields["width"], fields["height"], fields["num_images"], fields["seed"]) == (512, 512, 1, None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"samples": 5}, "samples must be between 1 and 4"),
        ({"height": "500"}, "height must be divisible by 8"),
        ({"width": 2048}, "width must be between 64 and 1024"),
        ({"width": "wide"}, "width must be a number"),
        ({"safety_checker": True}, "no safety checker is configured"),
        ({"enhance": True}, "is not a known field"),
    ],
)
def test_modelslab_validation_messages(change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidField, match=message):
        modelslab.job_fields({**SEED_002_BODY, **change})


def test_modelslab_renders_processing_then_success() -> None:
    queued = _status()
    processing = modelslab.render(queued, ["u0"], None, "f")
    assert processing["status"] == "processing" and processing["id"] == 123
    assert processing["future_links"] == ["u0"] and processing["fetch_result"] == "f" and processing["output"] == []
    done = queued.model_copy(
        update={"state": JobState.COMPLETED, "started_at": 1000.0, "finished_at": 1001.25, "seeds": [9]}
    )
    success = modelslab.render(done, ["u0"], None, "f")
    assert success["status"] == "success" and success["output"] == ["u0"] and success["generationTime"] == 1.25
    assert success["meta"]["seed"] == 9 and success["nsfw_content_detected"] is False


def test_a1111_info_is_a_json_string_with_a1111_keys() -> None:
    status = _status().model_copy(update={"seeds": [5, 6]})
    info = json.loads(a1111.info(status))
    assert info["all_seeds"] == [5, 6] and info["seed"] == 5
    assert {"prompt", "all_prompts", "infotexts", "sampler_name", "steps", "job_timestamp"} <= info.keys()
    assert info["infotexts"][1].splitlines()[-1].startswith("Steps: 4, Sampler: Euler, Schedule type: Automatic")


def test_infotext_follows_a1111_layout() -> None:
    text = infotext({"prompt": "a, b", "negative_prompt": "ugly", "steps": 30, "sampler": "DPM++ 2M",
                     "schedule": "karras", "guidance": 7.0, "width": 1024, "height": 768}, 42)
    assert text.splitlines() == [
        "a, b",
        "Negative prompt: ugly",
        "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 42, Size: 1024x768, "
        "Model: default, Version: easel",
    ]


def test_skidio_maps_fields_and_refuses_unknown_models() -> None:
    body = {"input": {"api_key": "k"}, "prompt": "p", "batch_size": 2, "guidance_scale": 3.5, "steps": 6, "seed": 42}
    assert skidio.api_key(body) == "k"
    assert skidio.job_fields(body) == {"prompt": "p", "steps": 6, "seed": 42, "num_images": 2, "guidance": 3.5}
    with pytest.raises(InvalidField, match="model: must be one of: sdxl, default"):
        skidio.job_fields({**body, "model": "flux-dev"})


def test_seed_documents_are_where_the_tests_expect_them() -> None:
    text = (Path(__file__).resolve().parent / "seeds" / "002_2ed97d1e4a4cfa1f.txt").read_text()
    assert '"width": "512"' in text and '"samples": 1' in text
