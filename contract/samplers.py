"""Every sampler and schedule Easel accepts, once: the A1111 names clients send and how diffusers runs them.

A sampler names a diffusers scheduler class (by name: the contract imports no diffusers; the runner resolves it)
with config overrides; a schedule names the sigma option that gives its noise levels. Everything else derives
from here: `JobSpec` validation, infotext labels, the runner's schedulers, the A1111 dialect's name mapping,
the `/sdapi/v1/samplers` and `/sdapi/v1/schedulers` listings and `easel generate`'s choices.

Defaults and aliases follow AUTOMATIC1111 1.10 (`modules/sd_samplers_kdiffusion.py`, `sd_samplers_timesteps.py`,
`sd_schedulers.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
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
    # For a scheduler without a `timestep_spacing` option: the spacing it always uses.
    fixed_spacing: str | None = None

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
    Sampler(
        "DPM++ 2S a", "DPMSolverSinglestepScheduler", "karras", ("k_dpmpp_2s_a",),
        unsupported_schedules=("sgm_uniform",), fixed_spacing="linspace",
    ),
    # A1111 1.9+ declares Karras for DPM++ SDE, as for the other DPM++ samplers but the 2M SDE ones.
    Sampler("DPM++ SDE", "DPMSolverSDEScheduler", "karras", ("k_dpmpp_sde",)),  # needs torchsde
    Sampler("DDIM", "DDIMScheduler", "automatic", ("ddim",), unsupported_schedules=_NO_SIGMA_OPTIONS),
    Sampler("UniPC", "UniPCMultistepScheduler", "automatic", ("unipc",)),
)

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


def resolve_schedule(sampler: str, schedule: str) -> Schedule:
    """The schedule a job runs with: "automatic" becomes the sampler's default."""
    chosen = SAMPLER_INFO[sampler].default_schedule if schedule == "automatic" else schedule
    return SCHEDULE_INFO[chosen]
