"""Loading the SDXL pipeline and running one job through it, reporting every denoising step."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from diffusers.utils import logging as diffusers_logging
from PIL import Image

from contract.job import Job
from gpu_runner.safety import SafetyChecker
from gpu_runner.samplers import build_scheduler
from gpu_runner.steps import LatentsCallback, StepCallback, StepCounter, ensemble_split, user_steps
from gpu_runner.tiny_model import is_saved_pipeline, save_tiny_sdxl

__all__ = ["LatentsCallback", "SDXLGenerator", "StepCallback", "pick_device", "resolve_model"]
log = structlog.get_logger(__name__)

T = TypeVar("T")


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
    """One pipeline per process, one job at a time: schedulers are stateful.

    Optionally an SDXL refiner (sharing the base's VAE and second text encoder, as the real pair
    does) and a safety checker, both loaded once at start.
    """

    def __init__(
        self, model: str, device: str = "auto", refiner: str = "", safety_checker: str = "", home: Path | None = None
    ) -> None:
        # Every torch call of the process happens on this one thread, loading included. Once a second
        # thread has run torch ops, the two OpenMP thread pools compete for the cores: generation
        # measured 2x slower on 2 cores (196 ms vs 361 ms for the same job; see BENCHMARKS.md).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-generate")
        self._thread.submit(self._load, model, device, refiner, safety_checker, home).result()

    def _load(self, model: str, device: str, refiner: str, safety_checker: str, home: Path | None) -> None:
        self._torch_thread = threading.get_ident()
        if not model:
            model = resolve_model("", home or Path(".easel"))
        self.device, dtype = pick_device(device)
        log.info("loading pipeline", model=model, device=self.device, dtype=str(dtype))
        diffusers_logging.disable_progress_bar()
        self.pipe = StableDiffusionXLPipeline.from_pretrained(model, dtype=dtype, add_watermarker=False)
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self._base_scheduler_config = self.pipe.scheduler.config
        self.refiner: StableDiffusionXLImg2ImgPipeline | None = None
        self._refiner_scheduler_config: Any = None
        if refiner:
            log.info("loading refiner", refiner=refiner)
            self.refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(
                refiner, text_encoder_2=self.pipe.text_encoder_2, vae=self.pipe.vae, dtype=dtype, add_watermarker=False
            )
            self.refiner.to(self.device)
            self.refiner.set_progress_bar_config(disable=True)
            # Kept apart: each job's scheduler is built from the loaded config, never the last job's.
            self._refiner_scheduler_config = self.refiner.scheduler.config
        self.checker = SafetyChecker(safety_checker, self.device, dtype) if safety_checker else None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the generator's thread and wait for it (for code without an event loop)."""
        if threading.get_ident() == self._torch_thread:
            return fn(*args)
        return self._thread.submit(fn, *args).result()

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the generator's one worker thread, off the event loop.

        Always the same thread, the one that loaded the model: see __init__.
        """
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def generate(
        self, job: Job, seeds: list[int], on_step: StepCallback, on_latents: LatentsCallback | None = None
    ) -> list[Image.Image]:
        """The job's images. Runs on the generator's thread whichever thread calls it (see __init__)."""
        return self.call(self._generate, job, seeds, on_step, on_latents)

    def _generate(
        self, job: Job, seeds: list[int], on_step: StepCallback, on_latents: LatentsCallback | None
    ) -> list[Image.Image]:
        pipe = self.pipe
        pipe.scheduler = build_scheduler(self._base_scheduler_config, job.sampler, job.schedule)
        # CPU generators: a seed gives the same initial noise on a CPU test box and on a GPU.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        common: dict[str, Any] = {
            "prompt": job.prompt,
            "negative_prompt": job.negative_prompt or None,
            "num_inference_steps": job.steps,
            "guidance_scale": job.guidance,
            "num_images_per_prompt": len(seeds),
            "generator": generators,
        }
        if job.refiner is not None:
            split = self._ensemble_split(job)
            # A switch so late that the refiner gets no timestep leaves the whole schedule to the base (below).
            if split[1]:
                return self._generate_ensemble(job, common, split, on_step, on_latents)
        counter = StepCounter(job.steps, on_step, on_latents)
        order = getattr(pipe.scheduler, "order", 1)
        callback = counter.phase(order, job.steps)
        result = pipe(**common, width=job.width, height=job.height, callback_on_step_end=callback)
        return list(result.images)

    def check_safety(self, images: list[Image.Image]) -> tuple[list[Image.Image], list[bool]]:
        return self.call(self._check_safety, images)

    def _check_safety(self, images: list[Image.Image]) -> tuple[list[Image.Image], list[bool]]:
        """Flagged images replaced by black ones, and the flags. Raises when no checker is configured."""
        if self.checker is None:
            raise RuntimeError("no safety checker is configured")
        return self.checker.check(images)

    def _ensemble_split(self, job: Job) -> tuple[int, int]:
        if self.refiner is None or job.refiner_switch_at is None:
            raise RuntimeError("this runner has no refiner loaded")
        base = build_scheduler(self._base_scheduler_config, job.sampler, job.schedule)
        refiner = build_scheduler(self._refiner_scheduler_config, job.sampler, job.schedule)
        return ensemble_split(base, refiner, job.steps, job.refiner_switch_at)

    def _generate_ensemble(
        self,
        job: Job,
        common: dict[str, Any],
        split: tuple[int, int],
        on_step: StepCallback,
        on_latents: LatentsCallback | None,
    ) -> list[Image.Image]:
        """Ensemble of expert denoisers: the base denoises down to the switch, the refiner the rest."""
        refiner = self.refiner
        assert refiner is not None
        refiner.scheduler = build_scheduler(self._refiner_scheduler_config, job.sampler, job.schedule)
        order = getattr(self.pipe.scheduler, "order", 1)
        base_steps, refiner_steps = user_steps(split[0], order), user_steps(split[1], order)
        counter = StepCounter(base_steps + refiner_steps, on_step, on_latents)
        latents = self.pipe(
            **common,
            width=job.width,
            height=job.height,
            denoising_end=job.refiner_switch_at,
            output_type="latent",
            callback_on_step_end=counter.phase(order, base_steps),
        ).images
        # The same generators, the same number of steps: the refiner runs its share of one schedule.
        result = refiner(
            **common,
            image=latents,
            denoising_start=job.refiner_switch_at,
            callback_on_step_end=counter.phase(order, refiner_steps),
        )
        return list(result.images)
