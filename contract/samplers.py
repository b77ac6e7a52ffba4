"""Every sampler and schedule Easel accepts, once: the A1111 names clients send and how diffusers runs them.

A sampler names a diffusers scheduler class (by name: the contract imports no diffusers; the runner resolves it)
with config overrides; a schedule names the sigma option that gives its noise levels. Everything else derives
from here: `JobSpec` validation, infotext labels, the runner's schedulers, the A1111 dialect's name mapping,
the `/sdapi/v1/samplers` and `/sdapi/v1/schedulers` listings and `easel generate`'s choices.

Defaults and aliases follow AUTOMATIC1111 1.10 (`modules/sd_samplers_kdiffusion.py`, `sd_samplers_timesteps.py`,
`sd_samplers_lcm.py`, `sd_schedulers.py`). A1111 samplers are listed here only where a diffusers scheduler runs the
same algorithm; the rest are in `REFUSED_SAMPLERS` with the reason, and refused naming the valid ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "REFUSED_SAMPLERS",
    "SAMPLERS",
    "SAMPLER_INFO",
    "SCHEDULES",
    "SCHEDULE_INFO",
    "UNSUPPORTED_SCHEDULES",
    "Sampler",
    "Schedule",
    "find_sampler",
    "find_schedule",
    "resolve_schedule",
    "sampler_conflict",
    "schedule_keys",
]


@dataclass(frozen=True)
class Schedule:
    """How noise levels are spaced. `options` are the diffusers scheduler config that gives that spacing."""

    name: str
    label: str  # A1111's label: infotext "Schedule type"
    options: MappingProxyType[str, Any]
    aliases: tuple[str, ...] = ()
    default_rho: float = -1  # A1111 lists -1 for "none"

    @property
    def spacing(self) -> str | None:
        spacing: str | None = self.options.get("timestep_spacing")
        return spacing


@dataclass(frozen=True)
class Sampler:
    """An A1111 sampler and the diffusers scheduler that runs it."""

    name: str
    scheduler: str  # a diffusers scheduler class name
    default_schedule: str  # what "automatic" means for this sampler
    aliases: tuple[str, ...] = ()
    config: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # Schedules the scheduler class has no option for; JobSpec refuses these pairs.
    unsupported_schedules: tuple[str, ...] = ()
    # For a scheduler that spaces timesteps its own way (it has no `timestep_spacing` option, or ignores it):
    # the spacing it always uses.
    fixed_spacing: str | None = None
    # Whether the scheduler's state survives the refiner hand-off (diffusers' denoising_end / denoising_start cut).
    refiner_handoff: bool = True
    # The most steps the scheduler can space (None: no limit below JobSpec's).
    max_steps: int | None = None

    @property
    def a1111_scheduler(self) -> str | None:
        """The scheduler A1111 names in the sampler's options: only one that departs from the model's own sigmas."""
        return None if self.default_schedule in ("automatic", "uniform") else self.default_schedule


def _options(**options: Any) -> MappingProxyType[str, Any]:
    return MappingProxyType(options)


_SCHEDULES = (
    # "automatic": the sampler's default schedule, else the loaded model's own scheduler config.
    Schedule("automatic", "Automatic", _options()),
    Schedule("uniform", "Uniform", _options(timestep_spacing="linspace")),
    Schedule("karras", "Karras", _options(use_karras_sigmas=True), default_rho=7.0),
    Schedule("exponential", "Exponential", _options(use_exponential_sigmas=True, timestep_spacing="linspace")),
    Schedule("sgm_uniform", "SGM Uniform", _options(timestep_spacing="trailing"), aliases=("SGMUniform",)),
)

_NO_SIGMA_OPTIONS = ("karras", "exponential")  # schedulers without use_karras_sigmas / use_exponential_sigmas

_SAMPLERS = (
    Sampler("Euler", "EulerDiscreteScheduler", "uniform", ("k_euler",)),
    Sampler(
        "Euler a", "EulerAncestralDiscreteScheduler", "uniform", ("k_euler_a", "k_euler_ancestral"),
        unsupported_schedules=_NO_SIGMA_OPTIONS,
    ),
    Sampler("LMS", "LMSDiscreteScheduler", "uniform", ("k_lms",)),
    Sampler("Heun", "HeunDiscreteScheduler", "uniform", ("k_heun",)),
    Sampler("DPM2", "KDPM2DiscreteScheduler", "karras", ("k_dpm_2",)),
    Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", "karras", ("k_dpm_2_a",)),
    Sampler(
        "DPM++ 2M", "DPMSolverMultistepScheduler", "karras", ("k_dpmpp_2m",), _options(algorithm_type="dpmsolver++")
    ),
    Sampler(
        "DPM++ 2M SDE", "DPMSolverMultistepScheduler", "exponential", ("k_dpmpp_2m_sde",),
        _options(algorithm_type="sde-dpmsolver++"),
    ),
    # k-diffusion's sample_dpmpp_2m_sde(solver_type="heun"): diffusers' sde-dpmsolver++ heun update is the same.
    Sampler(
        "DPM++ 2M SDE Heun", "DPMSolverMultistepScheduler", "exponential", ("k_dpmpp_2m_sde_heun",),
        _options(algorithm_type="sde-dpmsolver++", solver_type="heun"),
    ),
    # Without a sigma option DPMSolverSinglestepScheduler drops the last of steps + 1 evenly spaced timesteps: SGM
    # Uniform. Its Karras and Exponential sigmas span the full training range, whatever the spacing.
    Sampler(
        "DPM++ 2S a", "DPMSolverSinglestepScheduler", "karras", ("k_dpmpp_2s_a",),
        unsupported_schedules=("uniform",), fixed_spacing="trailing",
    ),
    # A1111 1.9+ declares Karras for DPM++ SDE, as for the other DPM++ samplers but the 2M SDE ones.
    Sampler("DPM++ SDE", "DPMSolverSDEScheduler", "karras", ("k_dpmpp_sde",)),  # needs torchsde
    Sampler("DDIM", "DDIMScheduler", "automatic", ("ddim",), unsupported_schedules=_NO_SIGMA_OPTIONS),
    # CompVis PLMS as A1111 runs it: a pseudo improved Euler first step (two model calls, so one timestep more than
    # steps), then Adams-Bashforth of order 2 to 4 on eps. The refiner's share would start that warm-up anew on
    # timesteps without the repeat and end a step short, so PLMS never hands off.
    Sampler(
        "PLMS", "PNDMScheduler", "automatic", ("plms",), _options(skip_prk_steps=True),
        unsupported_schedules=_NO_SIGMA_OPTIONS, refiner_handoff=False,
    ),
    Sampler("UniPC", "UniPCMultistepScheduler", "automatic", ("unipc",)),
    # A1111's sample_lcm with its LCM denoiser: the consistency boundary conditions (sigma_data 0.5, timestep
    # scaling 10) on the 50-step LCM grid. diffusers picks timesteps evenly from the top of that grid (trailing
    # spacing, rounded onto the grid) and cannot space more steps than it holds; A1111's own default spaces them
    # from 999 to 19, which diffusers has no option for, so LCM's default here is the schedule it really runs.
    Sampler(
        "LCM", "LCMScheduler", "sgm_uniform", ("k_lcm",),
        unsupported_schedules=("uniform", *_NO_SIGMA_OPTIONS), fixed_spacing="trailing", max_steps=50,
    ),
)

# A1111 1.10 samplers Easel refuses, and why: diffusers has none that runs the same algorithm.
REFUSED_SAMPLERS: MappingProxyType[str, str] = MappingProxyType({
    # diffusers 0.42.1's third-order sde-dpmsolver++ update weighs the second difference by k-diffusion's
    # coefficient minus one, so its images are not sample_dpmpp_3m_sde's.
    "DPM++ 3M SDE": "diffusers' third-order SDE solver is not k-diffusion's",
    "DPM fast": "diffusers has no DPM-Solver-fast (log-SNR steps, orders 3/2/1)",
    "DPM adaptive": "diffusers has no adaptive-step DPM-Solver (it ignores the step count)",
    "Restart": "diffusers has no Restart sampler",
    "DDIM CFG++": "diffusers has no CFG++ guidance",
})

SCHEDULE_INFO: MappingProxyType[str, Schedule] = MappingProxyType({s.name: s for s in _SCHEDULES})
SAMPLER_INFO: MappingProxyType[str, Sampler] = MappingProxyType({s.name: s for s in _SAMPLERS})
SAMPLERS: tuple[str, ...] = tuple(SAMPLER_INFO)
SCHEDULES: tuple[str, ...] = tuple(SCHEDULE_INFO)
UNSUPPORTED_SCHEDULES: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {s.name: s.unsupported_schedules for s in _SAMPLERS if s.unsupported_schedules}
)

# A1111 looks schedules up by name, label or alias; Easel also ignores case and surrounding spaces.
_SCHEDULE_KEYS = {
    key.lower(): schedule for schedule in _SCHEDULES for key in (schedule.name, schedule.label, *schedule.aliases)
}
# Sampler names are exact (as in A1111's API); its lower-case aliases ("k_euler_a") are matched ignoring case.
_SAMPLER_ALIASES = {alias.lower(): sampler for sampler in _SAMPLERS for alias in sampler.aliases}


def find_sampler(name: str) -> Sampler | None:
    """The sampler with this A1111 name or alias."""
    return SAMPLER_INFO.get(name) or _SAMPLER_ALIASES.get(name.strip().lower())


def find_schedule(name: str) -> Schedule | None:
    """The schedule with this name, A1111 label or alias, in any case."""
    return _SCHEDULE_KEYS.get(name.strip().lower())


def schedule_keys() -> tuple[str, ...]:
    """Every lower-cased spelling of every schedule (legacy sampler names carry one as a suffix)."""
    return tuple(_SCHEDULE_KEYS)


def sampler_conflict(sampler: str, schedule: str, steps: int, refiner: bool) -> str | None:
    """Why a known sampler cannot run this job as asked, or None: what JobSpec refuses beyond unknown names."""
    entry = SAMPLER_INFO[sampler]
    if schedule in entry.unsupported_schedules:
        return f"schedule {schedule!r} is not available with sampler {sampler!r}"
    if entry.max_steps is not None and steps > entry.max_steps:
        return f"sampler {sampler!r} runs at most {entry.max_steps} steps"
    if refiner and not entry.refiner_handoff:
        return f"sampler {sampler!r} cannot hand off to a refiner"
    return None


def resolve_schedule(sampler: str, schedule: str) -> Schedule:
    """The schedule a job runs with: "automatic" becomes the sampler's default."""
    chosen = SAMPLER_INFO[sampler].default_schedule if schedule == "automatic" else schedule
    return SCHEDULE_INFO[chosen]
