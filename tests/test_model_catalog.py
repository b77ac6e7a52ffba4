"""Configured models, refiner and safety checker: settings → catalog → job fields, refusals naming the choices."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from contract.catalog import Catalog
from contract.errors import InvalidField
from contract.job import Job, JobSpec
from contract.lifecycle import queued_status
from contract.loras import LoraFolder
from contract.settings import Settings
from contract.states import JobState, Output
from dialects import a1111, modelslab, runpod

CONFIGURED = Catalog(models=("sd_xl_base_1.0", "default"), refiners=("sd_xl_refiner_1.0",), safety_checker=True)


def test_the_catalog_comes_from_settings() -> None:
    bare = Catalog.from_settings(Settings.from_env({}))
    assert bare.loras == LoraFolder(Path(".easel/loras"))  # EASEL_LORA_DIR's default, under EASEL_HOME
    assert replace(bare, loras=None) == Catalog(models=("default",), refiners=(), safety_checker=False)
    env = {
        "EASEL_MODEL_NAME": "sd_xl_base_1.0",
        "EASEL_REFINER": "/models/refiner",
        "EASEL_REFINER_NAME": "sd_xl_refiner_1.0",
        "EASEL_SAFETY_CHECKER": "/models/checker",
    }
    assert replace(Catalog.from_settings(Settings.from_env(env)), loras=None) == CONFIGURED
    # A refiner name without a refiner is no refiner.
    assert Catalog.from_settings(Settings.from_env({"EASEL_REFINER_NAME": "r"})).refiners == ()


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"model": "sd15"}, ("model", "must be one of: sd_xl_base_1.0, default")),
        ({"refiner": "other"}, ("refiner", "must be one of: sd_xl_refiner_1.0")),
        ({"model": "default", "refiner": "sd_xl_refiner_1.0", "safety_checker": True}, None),
        ({"model": "sd_xl_base_1.0"}, None),
    ],
)
def test_the_catalog_names_what_is_not_configured(spec: dict[str, object], problem: tuple[str, str] | None) -> None:
    assert CONFIGURED.problem(JobSpec(prompt="p", **spec)) == problem  # type: ignore[arg-type]


def test_a_bare_catalog_refuses_refiner_and_checker() -> None:
    assert Catalog().problem(JobSpec(prompt="p", refiner="r")) == ("refiner", "no refiner is configured")
    field, rule = Catalog().problem(JobSpec(prompt="p", safety_checker=True)) or ("", "")
    assert field == "safety_checker" and "no safety checker is configured" in rule


def test_job_spec_refiner_fields() -> None:
    assert JobSpec(prompt="p", refiner="r").refiner_switch_at == 0.8
    assert JobSpec(prompt="p", refiner="r", refiner_switch_at=0.6).refiner_switch_at == 0.6
    assert JobSpec(prompt="p").refiner_switch_at is None and JobSpec(prompt="p").safety_checker is False
    for bad in (
        {"refiner_switch_at": 0.5},
        {"refiner": "r", "refiner_switch_at": 1.0},
        {"refiner": "r", "refiner_switch_at": 0},
    ):
        with pytest.raises(ValidationError):
            JobSpec(prompt="p", **bad)  # type: ignore[arg-type]


def test_a1111_maps_refiner_and_checkpoint_to_configured_names() -> None:
    payload = {
        "prompt": "x",
        "refiner_checkpoint": "sd_xl_refiner_1.0",
        "refiner_switch_at": 0.7,
        "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0"},
    }
    fields = a1111.job_fields(payload, CONFIGURED.models, refiner_names=CONFIGURED.refiners)
    assert (fields["model"], fields["refiner"], fields["refiner_switch_at"]) == (
        "sd_xl_base_1.0",
        "sd_xl_refiner_1.0",
        0.7,
    )
    spec = JobSpec(**fields)
    assert CONFIGURED.problem(spec) is None
    # No switch point given: A1111's 0.8. A switch point without a refiner: ignored, as A1111 does.
    assert (
        JobSpec(
            **a1111.job_fields(
                {"prompt": "x", "refiner_checkpoint": "sd_xl_refiner_1.0"},
                CONFIGURED.models,
                refiner_names=CONFIGURED.refiners,
            )
        ).refiner_switch_at
        == 0.8
    )
    assert "refiner" not in a1111.job_fields({"prompt": "x", "refiner_switch_at": 0.8}, CONFIGURED.models)


@pytest.mark.parametrize(
    ("payload", "field", "rule"),
    [
        ({"refiner_checkpoint": "other"}, "refiner_checkpoint", "must be one of: sd_xl_refiner_1.0"),
        (
            {"override_settings": {"sd_model_checkpoint": "sd15"}},
            "override_settings.sd_model_checkpoint",
            "must be one of: sd_xl_base_1.0, default",
        ),
    ],
)
def test_a1111_refuses_what_is_not_configured_naming_the_configured(
    payload: dict[str, object], field: str, rule: str
) -> None:
    with pytest.raises(InvalidField) as error:
        a1111.job_fields({"prompt": "x", **payload}, CONFIGURED.models, refiner_names=CONFIGURED.refiners)
    assert (error.value.field, error.value.rule) == (field, rule)


def test_runpod_seed_001_shape_passes_the_refiner_through() -> None:
    payload = {"prompt": "x", "refiner_checkpoint": "sd_xl_refiner_1.0", "refiner_switch_at": 0.8}
    body = {"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"}, "payload": payload}}
    fields, _ = runpod.job_fields(body, CONFIGURED.models, CONFIGURED.refiners)
    assert fields["refiner"] == "sd_xl_refiner_1.0"
    with pytest.raises(InvalidField, match="no refiner is configured"):
        runpod.job_fields(body, CONFIGURED.models)


@pytest.mark.parametrize(("sent", "asked"), [(True, True), ("yes", True), (False, False), ("no", False), (None, False)])
def test_modelslab_safety_checker_is_honoured_when_configured(sent: object, asked: bool) -> None:
    body = {"prompt": "x", "safety_checker": sent}
    assert modelslab.job_fields(body, safety_checker_available=True)["safety_checker"] is asked
    if asked:
        with pytest.raises(InvalidField, match="no safety checker is configured"):
            modelslab.job_fields(body)
    with pytest.raises(InvalidField, match="safety_checker must be true or false"):
        modelslab.job_fields({"prompt": "x", "safety_checker": "maybe"}, safety_checker_available=True)


def test_modelslab_reports_nsfw_content_detected_from_the_outputs() -> None:
    job = Job(id="1", owner="o", prompt="p", width=64, height=64, safety_checker=True)
    status = queued_status(job, 1.0)
    for flags, detected in (([False, True], True), ([False, False], False)):
        outputs = [
            Output(key=f"k{i}", content_type="image/png", width=64, height=64, seed=i, nsfw=f)
            for i, f in enumerate(flags)
        ]
        done = status.model_copy(update={"state": JobState.COMPLETED, "outputs": outputs})
        assert done.nsfw_content_detected == flags
        body = modelslab.render(done, ["u0", "u1"], None, "f")
        assert body["nsfw_content_detected"] is detected and body["meta"]["safety_checker"] == "yes"
