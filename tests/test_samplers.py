"""The sampler/schedule registry: the diffusers schedulers it builds, the names it maps, the listings it feeds."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Mapping
from typing import Any

import pytest
import torch
from diffusers import EulerDiscreteScheduler
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from contract.infotext import infotext
from contract.samplers import (
    SAMPLER_INFO,
    SAMPLERS,
    SCHEDULE_INFO,
    SCHEDULES,
    UNSUPPORTED_SCHEDULES,
    find_sampler,
    find_schedule,
    resolve_schedule,
)
from dialects.samplers import resolve
from easel import generate
from gpu_runner.samplers import UnsupportedSampler, build_scheduler, scheduler_class
from service import a1111_api

# An SDXL-like scheduler config (the tiny model's is the same shape): "leading" spacing, no sigma option set.
BASE_CONFIG = EulerDiscreteScheduler(
    beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, timestep_spacing="leading", steps_offset=1
).config
PAIRS = [(sampler, schedule) for sampler in SAMPLERS for schedule in SCHEDULES]


def _accepts(sampler: str) -> set[str]:
    return set(inspect.signature(scheduler_class(sampler).__init__).parameters)


def _timesteps(cls: Any, steps: int, **options: Any) -> list[int]:
    scheduler = cls.from_config(BASE_CONFIG, **options)
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


def _spaces_by_option(sampler: str) -> bool:
    """From diffusers itself: whether the class's timesteps follow `timestep_spacing` (LCM takes it, unused)."""
    cls = scheduler_class(sampler)
    return _timesteps(cls, 7, timestep_spacing="leading") != _timesteps(cls, 7, timestep_spacing="trailing")


def _can_honour(sampler: str, schedule: str) -> bool:
    """From diffusers itself: the class takes every sigma option, and spaces timesteps as the schedule asks."""
    entry, options = SAMPLER_INFO[sampler], resolve_schedule(sampler, schedule).options
    sigma_options = {key: value for key, value in options.items() if key != "timestep_spacing"}
    if not set(sigma_options) <= _accepts(sampler):
        return False
    spacing = options.get("timestep_spacing")
    if spacing in (None, entry.fixed_spacing):
        return True
    if entry.fixed_spacing is None:
        return _spaces_by_option(sampler)
    # Another spacing than the class's own: fine only where the sigma option alone sets the noise levels.
    return bool(sigma_options) and _same_sigmas(sampler, options)


def _same_sigmas(sampler: str, options: Mapping[str, Any]) -> bool:
    """The class's noise levels are Euler's under the same options (Euler honours every one of them)."""
    entry = SAMPLER_INFO[sampler]
    own = scheduler_class(sampler).from_config(BASE_CONFIG, **entry.config, **options)
    reference = EulerDiscreteScheduler.from_config(BASE_CONFIG, **options)
    for scheduler in (own, reference):
        scheduler.set_timesteps(7)
    return torch.allclose(own.sigmas[:7].float(), reference.sigmas[:7].float(), rtol=1e-3)


@pytest.mark.parametrize(("sampler", "schedule"), PAIRS)
def test_every_supported_pair_builds_its_scheduler_with_the_schedules_options(sampler: str, schedule: str) -> None:
    entry = SAMPLER_INFO[sampler]
    if schedule in entry.unsupported_schedules:
        with pytest.raises(UnsupportedSampler, match="does not support"):
            build_scheduler(BASE_CONFIG, sampler, schedule)
        return
    built = build_scheduler(BASE_CONFIG, sampler, schedule)
    assert type(built).__name__ == entry.scheduler
    expected: dict[str, Any] = {**entry.config, **resolve_schedule(sampler, schedule).options}
    if entry.fixed_spacing:
        expected.pop("timestep_spacing", None)
    assert {key: built.config[key] for key in expected} == expected
    for option in ("use_karras_sigmas", "use_exponential_sigmas"):  # the other sigma options stay off
        if option not in expected and option in built.config:
            assert not built.config[option]
    built.set_timesteps(5)  # the config is one diffusers can run


@pytest.mark.parametrize(("sampler", "schedule"), PAIRS)
def test_the_unsupported_pairs_are_exactly_those_diffusers_cannot_honour(sampler: str, schedule: str) -> None:
    assert (schedule not in UNSUPPORTED_SCHEDULES.get(sampler, ())) == _can_honour(sampler, schedule)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_can_run_its_default_schedule(sampler: str) -> None:
    entry = SAMPLER_INFO[sampler]
    assert entry.default_schedule in SCHEDULES
    assert entry.default_schedule not in entry.unsupported_schedules
    assert _spaces_by_option(sampler) == (entry.fixed_spacing is None)


@pytest.mark.parametrize("sampler", [s.name for s in SAMPLER_INFO.values() if s.fixed_spacing])
@pytest.mark.parametrize("steps", [1, 3, 4, 7, 10, 30])
def test_a_fixed_spacing_is_the_one_the_class_really_uses(sampler: str, steps: int) -> None:
    """Within LCM's 50-step grid (20 timesteps) of Euler's spacing of that name, and closer to it than to any other."""
    entry = SAMPLER_INFO[sampler]
    own = _timesteps(scheduler_class(sampler), steps)
    spacings = {s: _timesteps(EulerDiscreteScheduler, steps, timestep_spacing=s) for s in ("linspace", "trailing")}

    def distance(spacing: str) -> int:
        return max(abs(a - b) for a, b in zip(own, spacings[spacing], strict=True))

    assert entry.fixed_spacing is not None
    assert distance(entry.fixed_spacing) < 20
    assert all(distance(entry.fixed_spacing) <= distance(other) for other in spacings)


def test_dpmpp_sde_defaults_to_karras_as_a1111_does() -> None:
    built = build_scheduler(BASE_CONFIG, "DPM++ SDE", "automatic")
    assert built.config["use_karras_sigmas"] is True


def test_automatic_means_the_model_config_for_samplers_without_a_default() -> None:
    built = build_scheduler(BASE_CONFIG, "DDIM", "automatic")
    assert built.config["timestep_spacing"] == "leading"


def test_unknown_samplers_are_refused_by_the_runner() -> None:
    with pytest.raises(UnsupportedSampler, match="unknown sampler"):
        build_scheduler(BASE_CONFIG, "Warp", "automatic")


def test_every_a1111_alias_and_spelling_maps_to_its_entry() -> None:
    for entry in SAMPLER_INFO.values():
        for alias in (entry.name, *entry.aliases, *(a.upper() for a in entry.aliases)):
            assert find_sampler(alias) is entry
            assert resolve(alias, None) == (entry.name, "automatic")
    for schedule in SCHEDULE_INFO.values():
        for spelling in (schedule.name, schedule.label, schedule.label.upper(), *schedule.aliases):
            assert find_schedule(spelling) is schedule
            assert resolve("Euler", spelling) == ("Euler", schedule.name)
    assert find_sampler("euler") is None  # names are exact, as in A1111's API
    assert find_schedule("wobbly") is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("DPM++ SDE Karras", ("DPM++ SDE", "karras")),
        ("DPM++ 2M SDE Karras", ("DPM++ 2M SDE", "karras")),
        ("LMS Karras", ("LMS", "karras")),
        ("k_dpmpp_2m_sde Exponential", ("DPM++ 2M SDE", "exponential")),
        ("Euler SGMUniform", ("Euler", "sgm_uniform")),
        ("Euler SGM Uniform", ("Euler", "sgm_uniform")),
        ("DPM++ 2M SDE Heun Karras", ("DPM++ 2M SDE Heun", "karras")),
    ],
)
def test_legacy_combined_names_split_into_sampler_and_schedule(name: str, expected: tuple[str, str]) -> None:
    assert resolve(name, None) == expected


def test_infotext_writes_each_schedules_a1111_label() -> None:
    for schedule in SCHEDULE_INFO.values():
        text = infotext({"prompt": "p", "sampler": "Euler", "schedule": schedule.name}, 1)
        assert f"Schedule type: {schedule.label}," in text


def test_easel_generate_offers_exactly_the_registry() -> None:
    parser = argparse.ArgumentParser()
    generate.add_parser(parser.add_subparsers())
    for sampler, schedule in PAIRS:
        args = parser.parse_args(["generate", "p", "--sampler", sampler, "--schedule", schedule])
        assert (args.sampler, args.schedule) == (sampler, schedule)
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "p", "--sampler", "Warp"])


class _Keys:
    def authenticate(self, request: object, payload: object = None, *, basic: bool = False) -> str:
        return "owner"


class _State:
    keys = _Keys()


@pytest.fixture(scope="module")
def a1111() -> TestClient:
    app = Starlette(routes=[Route("/samplers", a1111_api.samplers), Route("/schedulers", a1111_api.schedulers)])
    app.state.easel = _State()
    return TestClient(app)


def test_the_a1111_sampler_listing_is_the_registry(a1111: TestClient) -> None:
    listed = a1111.get("/samplers").json()
    assert [s["name"] for s in listed] == list(SAMPLERS)
    by_name = {s["name"]: s for s in listed}
    for entry in SAMPLER_INFO.values():
        assert by_name[entry.name]["aliases"] == list(entry.aliases)
    # A1111 1.10 names a scheduler only where it departs from the model's own sigmas.
    assert by_name["DPM++ SDE"]["options"] == {"scheduler": "karras"}
    assert by_name["DPM++ 2M SDE"]["options"] == {"scheduler": "exponential"}
    assert by_name["Euler a"]["options"] == {}
    assert by_name["DDIM"]["options"] == {}
    assert by_name["DPM++ 2M SDE Heun"]["options"] == {"scheduler": "exponential"}
    assert by_name["PLMS"]["options"] == {}
    assert by_name["LCM"]["options"] == {"scheduler": "sgm_uniform"}  # what diffusers' LCM spacing is


def test_the_a1111_scheduler_listing_is_the_registry(a1111: TestClient) -> None:
    listed = a1111.get("/schedulers").json()
    assert [(s["name"], s["label"]) for s in listed] == [(s.name, s.label) for s in SCHEDULE_INFO.values()]
    by_name = {s["name"]: s for s in listed}
    assert by_name["karras"]["default_rho"] == 7.0
    assert by_name["uniform"]["default_rho"] == -1
    assert by_name["sgm_uniform"]["aliases"] == ["SGMUniform"]
    assert by_name["automatic"]["aliases"] is None
