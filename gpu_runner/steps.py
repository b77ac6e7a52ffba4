"""User-visible steps across one or two denoising phases (base, then refiner).

The pipelines call back once per scheduler timestep; second-order schedulers (Heun, DPM2, ...)
have about two timesteps per step, and A1111 counts the pair as one user step. With a refiner,
the base runs the timesteps at or above the switch and the refiner the rest, each in its own
call; the count goes on across both, out of one total known before the first step. img2img and
inpainting run only the end of the schedule (contract/job.py `denoising_steps`): that is their total.

Each reported step also carries the scheduler's prediction of the clean latents (x0, "denoised"),
what A1111 previews and returns for an interrupted job (its `last_latent`). Which schedulers make one:

- in the step's output (`pred_original_sample`, LCM's `denoised`): Euler, Euler a, Heun, DPM2,
  DPM2 a, LMS, DPM++ SDE (DPMSolverSDEScheduler), DDIM, DDPM, LCM;
- kept in `model_outputs[-1]`: DPMSolverMultistep / DPMSolverSinglestep with a `dpmsolver++` or
  `sde-dpmsolver++` algorithm (DPM++ 2M, 2M SDE, 2S a, ...), UniPC with `predict_x0` (its default);
- none: PNDM (PLMS), and the noise-predicting `dpmsolver` algorithms: the latents stand in.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# Called with (step, total steps) after each user-visible denoising step; may raise to stop the job.
StepCallback = Callable[[int, int], None]
# Called with (step, total steps, latents, denoised) right before the step's StepCallback: previews, partial images.
LatentsCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
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

    def phase(self, scheduler: Any, steps: int) -> PipelineCallback:
        """The callback_on_step_end for one pipeline call, with this scheduler, that runs `steps` user steps."""
        offset = self.reported
        order = getattr(scheduler, "order", 1)
        denoised = DenoisedTap(scheduler) if self.on_latents is not None else None

        def step_end(pipe: Any, index: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            step = offset + min(math.ceil((index + 1) / order), steps)
            if step != self.reported:
                self.reported = step
                # Latents first: a job told to stop at this step keeps this step's estimate (its partial image).
                if self.on_latents is not None and denoised is not None:
                    latents = kwargs["latents"]
                    self.on_latents(step, self.total, latents, denoised.estimate(latents))
                self.on_step(step, self.total)
            return kwargs

        return step_end


class DenoisedTap:
    """The clean latents (x0) a scheduler predicted at its latest step, where it predicts them (see above).

    The pipeline asks `step` for a bare tuple, which drops the prediction's name; the tap asks this
    scheduler (a fresh one per job) for the named output and hands the pipeline the same tuple. It keeps
    `step`'s signature: the pipeline passes a stochastic step the seeded generator only if it names one.
    """

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.latest: torch.Tensor | None = None
        step = scheduler.step

        @functools.wraps(step)
        def step_and_record(*args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
            output = step(*args, return_dict=True, **kwargs)
            self.latest = _named_x0(output)
            return output if return_dict else output.to_tuple()

        scheduler.step = step_and_record

    def estimate(self, latents: torch.Tensor) -> torch.Tensor:
        """This step's x0 prediction, or the latents themselves where the scheduler makes none."""
        for x0 in (self.latest, _kept_x0(self.scheduler)):
            if x0 is not None and x0.shape == latents.shape:
                return x0
        return latents


def _named_x0(output: Any) -> torch.Tensor | None:
    for name in ("pred_original_sample", "denoised"):
        x0 = getattr(output, name, None)
        if isinstance(x0, torch.Tensor):
            return x0
    return None


def _kept_x0(scheduler: Any) -> torch.Tensor | None:
    """The multistep solvers' latest converted model output, when it is a data (x0) prediction."""
    outputs = getattr(scheduler, "model_outputs", None)
    config = scheduler.config
    predicts_data = getattr(config, "algorithm_type", None) in ("dpmsolver++", "sde-dpmsolver++") or (
        getattr(config, "predict_x0", False) is True
    )
    if not outputs or not predicts_data or not isinstance(outputs[-1], torch.Tensor):
        return None
    return outputs[-1]
