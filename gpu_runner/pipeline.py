"""Loading the SDXL pipeline and running one job through it, reporting every denoising step."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog
import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.utils import logging as diffusers_logging
from PIL import Image

from contract.job import Job
from gpu_runner.samplers import build_scheduler
from gpu_runner.tiny_model import is_saved_pipeline, save_tiny_sdxl

log = structlog.get_logger(__name__)

T = TypeVar("T")
# Called with (step, total steps) after each user-visible denoising step; may raise to stop the job.
StepCallback = Callable[[int, int], None]
# Called with (step, total steps, latents) right after the step's StepCallback: previews.
LatentsCallback = Callable[[int, int, torch.Tensor], None]


def resolve_model(model: str, home: Path) -> str:
    """EASEL_MODEL, or the tiny random pipeline under EASEL_HOME (built on first use)."""
    if model:
        return model
    tiny = home / "models" / "tiny-sdxl"
    if not is_saved_pipeline(tiny):
        log.info("building the tiny random SDXL pipeline", path=str(tiny))
        save_tiny_sdxl(tiny)
    return str(tiny)


def pick_device(requested: str) -> tuple[str, torch.dtype]:
    device = requested
    if requested == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    # fp16 on a GPU; fp16 on a CPU is slow or unsupported, so fp32 there.
    return device, torch.float16 if device.startswith("cuda") else torch.float32


class SDXLGenerator:
    """One pipeline per process, one job at a time: schedulers are stateful."""

    def __init__(self, model: str, device: str = "auto") -> None:
        self.device, dtype = pick_device(device)
        log.info("loading pipeline", model=model, device=self.device, dtype=str(dtype))
        diffusers_logging.disable_progress_bar()
        self.pipe = StableDiffusionXLPipeline.from_pretrained(model, dtype=dtype, add_watermarker=False)
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self._base_scheduler_config = self.pipe.scheduler.config
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-generate")

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the generator's one worker thread, off the event loop.

        Always the same thread: torch's OpenMP worker pool belongs to the calling thread, and a new
        thread per job (asyncio.to_thread) would build a new pool each time, slowing every job.
        """
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def generate(
        self, job: Job, seeds: list[int], on_step: StepCallback, on_latents: LatentsCallback | None = None
    ) -> list[Image.Image]:
        pipe = self.pipe
        pipe.scheduler = build_scheduler(self._base_scheduler_config, job.sampler, job.schedule)
        # Second-order schedulers call back per sub-step; report A1111-style user steps.
        order = getattr(pipe.scheduler, "order", 1)
        last_step = 0

        def step_end(p: Any, index: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            nonlocal last_step
            step = min(math.ceil((index + 1) / order), job.steps)
            if step != last_step:
                last_step = step
                on_step(step, job.steps)
                if on_latents is not None:
                    on_latents(step, job.steps, kwargs["latents"])
            return kwargs

        # CPU generators: a seed gives the same initial noise on a CPU test box and on a GPU.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        result = pipe(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt or None,
            width=job.width,
            height=job.height,
            num_inference_steps=job.steps,
            guidance_scale=job.guidance,
            num_images_per_prompt=len(seeds),
            generator=generators,
            callback_on_step_end=step_end,
        )
        return list(result.images)
