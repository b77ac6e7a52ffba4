"""A1111 sampler and schedule names → a fresh diffusers scheduler for each job.

Schedulers are stateful, so every job gets its own, built from the loaded pipeline's config
(which keeps the model's betas and prediction type); the model is never reloaded.
"""

from __future__ import annotations

import inspect
from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# sampler → (scheduler class, extra kwargs, A1111's default schedule for it)
SAMPLER_TABLE: dict[str, tuple[type[SchedulerMixin], dict[str, Any], str]] = {
    "Euler": (EulerDiscreteScheduler, {}, "uniform"),
    "Euler a": (EulerAncestralDiscreteScheduler, {}, "uniform"),
    "LMS": (LMSDiscreteScheduler, {}, "uniform"),
    "Heun": (HeunDiscreteScheduler, {}, "uniform"),
    "DPM2": (KDPM2DiscreteScheduler, {}, "karras"),
    "DPM2 a": (KDPM2AncestralDiscreteScheduler, {}, "karras"),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}, "karras"),
    "DPM++ 2M SDE": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}, "exponential"),
    "DPM++ 2S a": (DPMSolverSinglestepScheduler, {}, "karras"),
    "DPM++ SDE": (DPMSolverSDEScheduler, {}, "karras"),  # needs torchsde
    "DDIM": (DDIMScheduler, {}, "automatic"),
    "UniPC": (UniPCMultistepScheduler, {}, "automatic"),
}

SCHEDULE_KWARGS: dict[str, dict[str, Any]] = {
    "automatic": {},
    "uniform": {"timestep_spacing": "linspace"},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True, "timestep_spacing": "linspace"},
    "sgm_uniform": {"timestep_spacing": "trailing"},
}


class UnsupportedSampler(ValueError):
    pass


def build_scheduler(base_config: Any, sampler: str, schedule: str) -> SchedulerMixin:
    try:
        cls, kwargs, default_schedule = SAMPLER_TABLE[sampler]
    except KeyError:
        raise UnsupportedSampler(f"unknown sampler {sampler!r}") from None
    chosen = default_schedule if schedule == "automatic" else schedule
    schedule_kwargs = SCHEDULE_KWARGS[chosen]
    # from_config only warns on unknown kwargs: refuse pairs the class cannot honour.
    unsupported = [k for k in schedule_kwargs if k.startswith("use_") and k not in inspect.signature(cls.__init__).parameters]
    if unsupported:
        if schedule != "automatic":
            raise UnsupportedSampler(f"sampler {sampler!r} does not support the {schedule!r} schedule")
        schedule_kwargs = {}
    return cls.from_config(base_config, **kwargs, **schedule_kwargs)
