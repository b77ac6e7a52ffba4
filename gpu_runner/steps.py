"""User-visible steps across one or two denoising phases (base, then refiner).

The pipelines call back once per scheduler timestep; second-order schedulers (Heun, DPM2, ...)
have about two timesteps per step, and A1111 counts the pair as one user step. With a refiner,
the base runs the timesteps at or above the switch and the refiner the rest, each in its own
call; the count goes on across both, out of one total known before the first step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# Called with (step, total steps) after each user-visible denoising step; may raise to stop the job.
StepCallback = Callable[[int, int], None]
# Called with (step, total steps, latents) right after the step's StepCallback: previews.
LatentsCallback = Callable[[int, int, torch.Tensor], None]
PipelineCallback = Callable[[Any, int, Any, dict[str, Any]], dict[str, Any]]


def user_steps(timesteps: int, order: int) -> int:
    return math.ceil(timesteps / order)


def ensemble_split(base: SchedulerMixin, refiner: SchedulerMixin, steps: int, switch: float) -> tuple[int, int]:
    """How many timesteps the base and the refiner each run, as diffusers cuts them.

    Mirrors StableDiffusionXLPipeline's `denoising_end` cut (keep t >= cutoff) and the img2img
    pipeline's `denoising_start` (t < cutoff, plus one for a second-order scheduler so that a
    pair is not split). Fresh schedulers: set_timesteps resets state the job must not inherit.
    """
    cutoffs = []
    for scheduler in (base, refiner):
        scheduler.set_timesteps(steps, device="cpu")
        train = scheduler.config.num_train_timesteps
        cutoffs.append(round(train - switch * train))
    base_count = int((base.timesteps >= cutoffs[0]).sum().item())
    refiner_count = int((refiner.timesteps < cutoffs[1]).sum().item())
    if refiner.order == 2 and refiner_count % 2 == 0 and refiner_count:
        refiner_count += 1
    return base_count, refiner_count


class StepCounter:
    """Reports each user step once, monotonically, out of `total`, across the phases it is given."""

    def __init__(self, total: int, on_step: StepCallback, on_latents: LatentsCallback | None = None) -> None:
        self.total = total
        self.on_step = on_step
        self.on_latents = on_latents
        self.reported = 0

    def phase(self, order: int, steps: int) -> PipelineCallback:
        """The callback_on_step_end for one pipeline call that runs `steps` user steps."""
        offset = self.reported

        def step_end(pipe: Any, index: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            step = offset + min(math.ceil((index + 1) / order), steps)
            if step != self.reported:
                self.reported = step
                # Latents first: a job told to stop at this step keeps this step's latents (its partial image).
                if self.on_latents is not None:
                    self.on_latents(step, self.total, kwargs["latents"])
                self.on_step(step, self.total)
            return kwargs

        return step_end
