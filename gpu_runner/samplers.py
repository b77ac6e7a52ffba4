"""A job's sampler and schedule → a fresh diffusers scheduler, as contract/samplers.py describes them.

Schedulers are stateful, so every job gets its own, built from the loaded pipeline's config
(which keeps the model's betas and prediction type); the model is never reloaded.
"""

from __future__ import annotations

from typing import Any, cast

import diffusers
from diffusers.configuration_utils import ConfigMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from contract.samplers import SAMPLER_INFO, resolve_schedule


class UnsupportedSampler(ValueError):
    pass


def scheduler_class(sampler: str) -> type[ConfigMixin]:
    """The diffusers class (a SchedulerMixin that is also a ConfigMixin, which builds it from a config)."""
    try:
        name = SAMPLER_INFO[sampler].scheduler
    except KeyError:
        raise UnsupportedSampler(f"unknown sampler {sampler!r}") from None
    cls: type[ConfigMixin] = getattr(diffusers, name)
    return cls


def build_scheduler(base_config: Any, sampler: str, schedule: str) -> SchedulerMixin:
    cls = scheduler_class(sampler)
    entry = SAMPLER_INFO[sampler]
    if schedule in entry.unsupported_schedules:
        raise UnsupportedSampler(f"sampler {sampler!r} does not support the {schedule!r} schedule")
    options = dict(resolve_schedule(sampler, schedule).options)
    if entry.fixed_spacing:
        # The class has no such option and spaces its own way; the registry refuses schedules it would betray.
        options.pop("timestep_spacing", None)
    # from_config returns a tuple only when asked for the unused kwargs.
    return cast("SchedulerMixin", cls.from_config(base_config, **entry.config, **options))
