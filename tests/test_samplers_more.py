"""The samplers added from A1111 1.10 (DPM++ 2M SDE Heun, PLMS, LCM) through the real tiny SDXL pipeline, and the
A1111 names still refused, with the evidence for each refusal that rests on diffusers' code."""

from __future__ import annotations

import re

import numpy
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler
from PIL import Image
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from contract.errors import UnknownName
from contract.job import Job, JobSpec
from contract.samplers import REFUSED_SAMPLERS, SAMPLER_INFO, SAMPLERS, find_sampler, sampler_conflict
from dialects.samplers import resolve
from gpu_runner.pipeline import SDXLGenerator
from gpu_runner.samplers import build_scheduler
from gpu_runner.steps import user_steps
from gpu_runner.tiny_model import save_tiny_refiner
from service import a1111_api

ADDED = ["DPM++ 2M SDE Heun", "PLMS", "LCM"]
HANDS_OFF = [name for name in ADDED if SAMPLER_INFO[name].refiner_handoff]


@pytest.fixture(scope="module")
def generator(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> SDXLGenerator:
    refiner = save_tiny_refiner(tmp_path_factory.mktemp("refiner"))
    return SDXLGenerator(tiny_model, "cpu", refiner=str(refiner))


def job(**changes: object) -> Job:
    fields: dict[str, object] = {"prompt": "a fox", "id": "j", "owner": "o", "width": 72, "height": 64, "steps": 5}
    return Job.model_validate({**fields, **changes})


def assert_valid(image: Image.Image) -> None:
    assert image.mode == "RGB" and image.size == (72, 64)
    pixels = numpy.asarray(image)
    assert pixels.min() < pixels.max()  # not one flat colour (NaNs decode to black)


@pytest.mark.parametrize("sampler", ADDED)
@pytest.mark.parametrize("steps", [4, 7])
def test_each_added_sampler_draws_a_valid_image_counting_a1111_steps(
    generator: SDXLGenerator, sampler: str, steps: int
) -> None:
    reported: list[tuple[int, int]] = []
    [image] = generator.generate(job(sampler=sampler, steps=steps), [2], lambda s, t: reported.append((s, t)))
    assert_valid(image)
    assert reported == [(step, steps) for step in range(1, steps + 1)]


def test_plms_runs_one_timestep_more_than_its_steps(generator: SDXLGenerator) -> None:
    """CompVis PLMS's pseudo improved Euler start calls the model twice; it is still one user step."""
    generator.generate(job(sampler="PLMS", steps=6), [2], lambda s, t: None)
    assert generator.pipe.num_timesteps == 7


@pytest.mark.parametrize("sampler", HANDS_OFF)
def test_the_added_samplers_that_hand_off_do_so_to_the_refiner(generator: SDXLGenerator, sampler: str) -> None:
    reported: list[tuple[int, int]] = []
    refined = job(sampler=sampler, steps=6, refiner="refiner", refiner_switch_at=0.6)
    [image] = generator.generate(refined, [3], lambda s, t: reported.append((s, t)))
    assert_valid(image)
    assert generator.refiner is not None
    base_ran, refiner_ran = generator.pipe.num_timesteps, generator.refiner.num_timesteps
    assert base_ran > 0 and refiner_ran > 0  # both experts denoised
    total = user_steps(base_ran, 1) + user_steps(refiner_ran, 1)
    assert total == 6  # first-order schedulers: the requested steps, split between the experts
    assert reported == [(step, total) for step in range(1, total + 1)]


def test_plms_never_hands_off_to_a_refiner(generator: SDXLGenerator) -> None:
    """PNDM's second call redoes its first step (the repeated timestep); a refiner's share has no repeat."""
    plms = build_scheduler(generator.pipe.scheduler.config, "PLMS", "automatic")
    plms.set_timesteps(10)
    timesteps = [int(t) for t in plms.timesteps]
    assert timesteps[1] == timesteps[2] and len(set(timesteps)) == 10
    refiner_share = [t for t in timesteps if t < 400]
    assert len(set(refiner_share)) == len(refiner_share)
    assert HANDS_OFF != ADDED and not SAMPLER_INFO["PLMS"].refiner_handoff
    assert sampler_conflict("PLMS", "automatic", 20, refiner=True) == "sampler 'PLMS' cannot hand off to a refiner"
    assert sampler_conflict("PLMS", "automatic", 20, refiner=False) is None


def test_lcm_runs_at_most_the_50_steps_of_its_grid(generator: SDXLGenerator) -> None:
    config = generator.pipe.scheduler.config
    build_scheduler(config, "LCM", "automatic").set_timesteps(50)
    with pytest.raises(ValueError, match="smaller than `num_inference_steps`: 51"):  # diffusers' own limit
        build_scheduler(config, "LCM", "automatic").set_timesteps(51)
    assert sampler_conflict("LCM", "automatic", 50, refiner=False) is None
    assert sampler_conflict("LCM", "automatic", 51, refiner=False) == "sampler 'LCM' runs at most 50 steps"


def test_the_schedule_conflicts_are_the_registry_s() -> None:
    refusal = sampler_conflict("LCM", "karras", 20, refiner=False)
    assert refusal == "schedule 'karras' is not available with sampler 'LCM'"
    assert sampler_conflict("DPM++ 2M SDE Heun", "karras", 20, refiner=True) is None


def test_jobspec_refuses_plms_with_a_refiner() -> None:
    with pytest.raises(ValueError, match="cannot hand off to a refiner"):
        JobSpec(prompt="p", sampler="PLMS", refiner="refiner")


def test_jobspec_refuses_lcm_past_50_steps() -> None:
    with pytest.raises(ValueError, match="at most 50 steps"):
        JobSpec(prompt="p", sampler="LCM", steps=51)


class _Keys:
    def authenticate(self, request: object, payload: object = None, *, basic: bool = False) -> str:
        return "owner"


class _State:
    keys = _Keys()


def test_the_a1111_listing_names_the_added_samplers_with_a1111_aliases() -> None:
    app = Starlette(routes=[Route("/samplers", a1111_api.samplers)])
    app.state.easel = _State()
    listed = {s["name"]: s for s in TestClient(app).get("/samplers").json()}
    assert listed["DPM++ 2M SDE Heun"]["aliases"] == ["k_dpmpp_2m_sde_heun"]
    assert listed["PLMS"]["aliases"] == ["plms"]
    assert listed["LCM"]["aliases"] == ["k_lcm"]
    assert not set(REFUSED_SAMPLERS) & set(listed)


@pytest.mark.parametrize("name", sorted(REFUSED_SAMPLERS))
def test_each_refused_a1111_sampler_is_refused_with_its_reason_and_the_valid_list(name: str) -> None:
    assert find_sampler(name) is None and name not in SAMPLERS
    with pytest.raises(UnknownName) as error:
        resolve(name, None)
    assert error.value.field == "sampler_name"
    assert REFUSED_SAMPLERS[name] in error.value.rule
    assert f"valid: {', '.join(SAMPLERS)}" in error.value.rule
    with pytest.raises(ValueError, match=re.escape(f"must be one of: {', '.join(SAMPLERS)}")):  # the native field
        JobSpec(prompt="p", sampler=name)


def test_diffusers_third_order_sde_step_is_not_k_diffusions_dpmpp_3m_sde() -> None:
    """Why "DPM++ 3M SDE" stays refused: with the noise at zero, diffusers 0.42.1's step differs from
    k-diffusion's sample_dpmpp_3m_sde by one whole second difference (-alpha_t * D2). Should diffusers fix it,
    this fails and the sampler can be added."""
    scheduler = DPMSolverMultistepScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, algorithm_type="sde-dpmsolver++",
        solver_order=3,
    )
    scheduler.set_timesteps(10)
    scheduler._step_index = 5
    generator = torch.Generator().manual_seed(0)
    sample, *outputs = (torch.randn(4, generator=generator, dtype=torch.float64) for _ in range(4))
    m2, m1, m0 = outputs
    ours = scheduler.multistep_dpm_solver_third_order_update([m2, m1, m0], sample=sample, noise=torch.zeros(4))

    sigmas = scheduler.sigmas[3:7].double()  # s2, s1, s0, t: k-diffusion's (variance-exploding) sigmas
    alpha_t = 1 / (sigmas[3] ** 2 + 1) ** 0.5
    lambdas = -sigmas.log()
    h, h_0, h_1 = lambdas[3] - lambdas[2], lambdas[2] - lambdas[1], lambdas[1] - lambdas[0]
    r0, r1 = h_0 / h, h_1 / h
    d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
    d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    h_eta = 2 * h  # eta = 1
    phi_2 = torch.expm1(-h_eta) / h_eta + 1
    phi_3 = phi_2 / h_eta - 0.5
    x = sample * (sigmas[2] ** 2 + 1) ** 0.5  # variance-preserving → variance-exploding
    x = sigmas[3] / sigmas[2] * torch.exp(-h) * x - torch.expm1(-h_eta) * m0 + phi_2 * d1 - phi_3 * d2
    k_diffusion = alpha_t * x

    assert (alpha_t * d2).abs().max() > 0.1  # a difference far above diffusers' float32 rounding
    assert torch.allclose(ours.double() - k_diffusion, -alpha_t * d2, atol=1e-5)


def test_diffusers_heun_sde_step_is_k_diffusions_dpmpp_2m_sde_heun() -> None:
    """Why "DPM++ 2M SDE Heun" is added: with the noise at zero, diffusers' second-order sde-dpmsolver++ step with
    solver_type="heun" is k-diffusion's sample_dpmpp_2m_sde(solver_type="heun", eta=1)."""
    scheduler = DPMSolverMultistepScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        **SAMPLER_INFO["DPM++ 2M SDE Heun"].config,
    )
    scheduler.set_timesteps(10)
    scheduler._step_index = 5
    generator = torch.Generator().manual_seed(1)
    sample, m1, m0 = (torch.randn(4, generator=generator, dtype=torch.float64) for _ in range(3))
    ours = scheduler.multistep_dpm_solver_second_order_update([m1, m0], sample=sample, noise=torch.zeros(4))

    sigmas = scheduler.sigmas[4:7].double()  # s1, s0, t
    alpha_t = 1 / (sigmas[2] ** 2 + 1) ** 0.5
    h_last, h = (sigmas[0] / sigmas[1]).log(), (sigmas[1] / sigmas[2]).log()
    x = sample * (sigmas[1] ** 2 + 1) ** 0.5  # variance-preserving → variance-exploding
    x = sigmas[2] / sigmas[1] * torch.exp(-h) * x - torch.expm1(-2 * h) * m0
    x = x + (-torch.expm1(-2 * h) / (-2 * h) + 1) * (h / h_last) * (m0 - m1)

    assert torch.allclose(ours.double(), alpha_t * x, atol=1e-5)  # diffusers computes in float32
