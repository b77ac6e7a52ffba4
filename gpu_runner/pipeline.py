"""Loading the SDXL pipeline and running a batch of jobs (or one) through it, reporting every denoising step.

txt2img, img2img and inpainting jobs run through three pipelines that share one set of loaded components
(diffusers' `from_pipe`): the weights are in memory once.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import structlog
import torch
from diffusers import (
    AutoencoderKL,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.utils import logging as diffusers_logging
from PIL import Image

from contract.errors import SettingsError
from contract.job import Job, denoising_steps, new_job_id
from contract.loras import LoraFolder
from contract.settings import Settings
from gpu_runner import prompts
from gpu_runner.loras import LoraLibrary
from gpu_runner.previews import PreviewDecoder
from gpu_runner.safety import SafetyChecker
from gpu_runner.samplers import build_scheduler
from gpu_runner.steps import (
    LatentsCallback,
    StepCallback,
    StepCounter,
    ensemble_split,
    user_steps,
)
from gpu_runner.tiny_model import is_saved_pipeline, save_tiny_sdxl

__all__ = [
    "BatchItem",
    "LatentsCallback",
    "SDXLGenerator",
    "StepCallback",
    "optimise_for_cuda",
    "pick_device",
    "pick_dtype",
    "resolve_model",
]
log = structlog.get_logger(__name__)

T = TypeVar("T")
Pipeline: TypeAlias = StableDiffusionXLPipeline | StableDiffusionXLImg2ImgPipeline | StableDiffusionXLInpaintPipeline

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# SDXL's VAE overflows in fp16 and diffusers then decodes every job in fp32; this one does not (force_upcast false).
FP16_SAFE_VAE = "madebyollin/sdxl-vae-fp16-fix"
# One VAE decode pass covers at most this many pixels: a larger image decodes in tiles, a larger batch one image
# at a time. SDXL's VAE decoding 1536² in fp16 already takes several GB.
DECODE_PIXELS_AT_ONCE = 1536 * 1536
# Not "reduce-overhead": CUDA graphs replay into the same output buffers (the step callback keeps latents across
# steps for previews), record a graph per shape and batch size, and save little where each UNet call is
# compute-bound (SDXL at 1024², ~50 ms a step). max-autotune still picks the fastest GEMM/conv kernels.
COMPILE_MODE = "max-autotune-no-cudagraphs"
# The warm-up: a small job loads the kernels; compiled, the sizes jobs are expected to use are compiled instead
# (a compile is minutes, so no size only the warm-up uses).
WARM_UP_SIZES = ((256, 256),)
COMPILED_WARM_UP_SIZES = ((1024, 1024),)
WARM_UP_STEPS = 2


def resolve_model(model: str, home: Path) -> str:
    """EASEL_MODEL, or the tiny random pipeline under EASEL_HOME (built on first use)."""
    if model:
        return model
    tiny = home / "models" / "tiny-sdxl"
    if not is_saved_pipeline(tiny):
        log.info("building the tiny random SDXL pipeline", path=str(tiny))
        save_tiny_sdxl(tiny)
    return str(tiny)


def pick_device(requested: str) -> str:
    """EASEL_DEVICE: `auto` (the first GPU, else the CPU), `cpu`, `cuda` or `cuda:N`."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def pick_dtype(device: str, requested: str, fp16_safe_vae: bool) -> torch.dtype:
    """EASEL_DTYPE on `device`. CPUs run fp32 (fp16 there is slow or unsupported). `auto` on a GPU: fp16 when the
    VAE decodes safely in fp16, else bf16 where the GPU has it natively (no per-job fp32 VAE decode either)."""
    if requested != "auto" and requested not in DTYPES:
        raise SettingsError(f"EASEL_DTYPE={requested!r}: expected auto, {', '.join(DTYPES)}")
    if not device.startswith("cuda"):
        if requested not in ("auto", "fp32"):
            raise SettingsError(f"EASEL_DTYPE={requested} needs a CUDA device; {device} runs fp32")
        return torch.float32
    if requested != "auto":
        return DTYPES[requested]
    if fp16_safe_vae or not torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.float16
    return torch.bfloat16


def vae_is_fp16_safe(model: str, vae: str) -> bool:
    """Whether the VAE that will decode (`vae`, else the model's own) says it needs no fp32 upcast."""
    config = AutoencoderKL.load_config(vae) if vae else AutoencoderKL.load_config(model, subfolder="vae")
    return not config.get("force_upcast", True)


def optimise_for_cuda(pipe: Pipeline, compile_unet: bool) -> None:
    """channels_last for the convolution-heavy UNet and VAE (faster cuDNN kernels); optionally a compiled UNet.

    Compiling is lazy: the first call of each shape compiles it (see warm_up).
    """
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)
    if compile_unet:
        # In place: pipe.unet stays a UNet2DConditionModel (its config is read on every call).
        pipe.unet.compile(mode=COMPILE_MODE)


class SDXLGenerator:
    """One pipeline per process, one call (one job, or a batch of compatible jobs) at a time: schedulers are stateful.

    Optionally an SDXL refiner (sharing the base's VAE and second text encoder, as the real pair
    does) and a safety checker, both loaded once at start.
    """

    def __init__(
        self,
        model: str,
        device: str = "auto",
        refiner: str = "",
        safety_checker: str = "",
        home: Path | None = None,
        *,
        dtype: str = "auto",
        vae: str = "",
        compile_unet: bool = False,
        decode_pixels_at_once: int = DECODE_PIXELS_AT_ONCE,
        loras: LoraLibrary | None = None,
        preview_vae: str = "",
    ) -> None:
        """`vae`: a VAE (folder or hub id) replacing the model's, e.g. FP16_SAFE_VAE for fp16 on a GPU."""
        self.compiled = compile_unet
        self.decode_pixels_at_once = decode_pixels_at_once
        # LoRAs from EASEL_LORA_DIR (by default <home>/loras), applied per call to the base's modules.
        self.loras = loras or LoraLibrary(LoraFolder.from_settings(Settings(home=home or Path(".easel"))))
        # Every torch call of the process happens on this one thread, loading included. Once a second
        # thread has run torch ops, the two OpenMP thread pools compete for the cores: generation
        # measured 2x slower on 2 cores (196 ms vs 361 ms for the same job; see BENCHMARKS.md).
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-generate")
        self._thread.submit(self._load, model, device, refiner, safety_checker, home, dtype, vae, preview_vae).result()

    @classmethod
    def from_settings(cls, settings: Settings) -> SDXLGenerator:
        return cls(
            settings.model, settings.device, settings.refiner, settings.safety_checker, home=settings.home,
            dtype=settings.dtype, vae=settings.vae, compile_unet=bool(settings.compile),
            loras=LoraLibrary.from_settings(settings), preview_vae=settings.preview_vae,
        )

    def _load(
        self,
        model: str,
        device: str,
        refiner: str,
        safety_checker: str,
        home: Path | None,
        dtype_name: str,
        vae: str,
        preview_vae: str,
    ) -> None:
        self._torch_thread = threading.get_ident()
        if not model:
            model = resolve_model("", home or Path(".easel"))
        self.device = pick_device(device)
        cuda = self.device.startswith("cuda")
        if cuda and (index := torch.device(self.device).index) is not None:
            torch.cuda.set_device(index)  # EASEL_DEVICE=cuda:N: compiled kernels and the bf16 check use this GPU
        # Read only where it decides something: a GPU's `auto`.
        fp16_safe = cuda and dtype_name == "auto" and vae_is_fp16_safe(model, vae)
        dtype = pick_dtype(self.device, dtype_name, fp16_safe)
        log.info("loading pipeline", model=model, vae=vae or None, device=self.device, dtype=str(dtype))
        diffusers_logging.disable_progress_bar()
        components = {"vae": AutoencoderKL.from_pretrained(vae, dtype=dtype)} if vae else {}
        self.pipe = StableDiffusionXLPipeline.from_pretrained(model, dtype=dtype, add_watermarker=False, **components)
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        if dtype == torch.float16 and self.pipe.vae.config.force_upcast:
            log.warning("this VAE decodes every job in fp32 (it overflows in fp16): set a fp16-safe VAE or use bf16",
                        fp16_safe_vae=FP16_SAFE_VAE)
        if cuda:
            optimise_for_cuda(self.pipe, self.compiled)
        self._base_scheduler_config = self.pipe.scheduler.config
        # The same components, not a copy. `dtype` matters: from_pipe casts the shared modules to it (fp32 if unset).
        self.img2img = StableDiffusionXLImg2ImgPipeline.from_pipe(self.pipe, dtype=dtype, add_watermarker=False)
        self.inpaint = StableDiffusionXLInpaintPipeline.from_pipe(self.pipe, dtype=dtype, add_watermarker=False)
        for shared in (self.img2img, self.inpaint):
            shared.set_progress_bar_config(disable=True)
        self.refiner: StableDiffusionXLImg2ImgPipeline | None = None
        self._refiner_scheduler_config: Any = None
        if refiner:
            log.info("loading refiner", refiner=refiner)
            self.refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(
                refiner, text_encoder_2=self.pipe.text_encoder_2, vae=self.pipe.vae, dtype=dtype, add_watermarker=False
            )
            self.refiner.to(self.device)
            self.refiner.set_progress_bar_config(disable=True)
            if cuda:
                optimise_for_cuda(self.refiner, self.compiled)
            # Kept apart: each job's scheduler is built from the loaded config, never the last job's.
            self._refiner_scheduler_config = self.refiner.scheduler.config
        self.checker = SafetyChecker(safety_checker, self.device, dtype) if safety_checker else None
        # EASEL_PREVIEW_VAE's TAESD, else None (the linear latent-to-RGB map): previews run on this thread.
        self.preview_decoder = PreviewDecoder.load(preview_vae, self.device, dtype)

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

    def warm_up(self, sizes: Sequence[tuple[int, int]] = ()) -> None:
        """Run a short job of each size (default: WARM_UP_SIZES, or COMPILED_WARM_UP_SIZES when compiled), so the
        first real job pays no kernel loading, allocator growth or compilation. Call before taking jobs."""
        for width, height in sizes or (COMPILED_WARM_UP_SIZES if self.compiled else WARM_UP_SIZES):
            job = Job(id=new_job_id(), owner="easel", prompt="warm-up", width=width, height=height, steps=WARM_UP_STEPS)
            started = time.perf_counter()
            self.generate(job, [0], lambda step, total: None)
            log.info("warmed up", width=width, height=height, seconds=round(time.perf_counter() - started, 2))

    def generate(
        self, job: Job, seeds: list[int], on_step: StepCallback, on_latents: LatentsCallback | None = None
    ) -> list[Image.Image]:
        """The job's images. Runs on the generator's thread whichever thread calls it (see __init__)."""
        return self.call(self._generate, job, seeds, on_step, on_latents)

    def generate_batch(self, items: Sequence[BatchItem], on_step: StepCallback) -> list[list[Image.Image]]:
        """Each item's images, out of one pipeline call (the items share their `batch_key`). `on_step` is called
        once per step for the whole batch; each item's `on_latents` gets its own images' latents."""
        return self.call(self._generate_batch, items, on_step)

    def _generate(
        self, job: Job, seeds: list[int], on_step: StepCallback, on_latents: LatentsCallback | None
    ) -> list[Image.Image]:
        [images] = self._generate_batch([BatchItem(job, seeds, on_latents)], on_step)
        return images

    def _generate_batch(self, items: Sequence[BatchItem], on_step: StepCallback) -> list[list[Image.Image]]:
        first = items[0]  # what the call shares: every item has the same batch key (input images included)
        job = first.job
        pipe, inputs = self._pipeline_for(first)
        pipe.scheduler = build_scheduler(self._base_scheduler_config, job.sampler, job.schedule)
        self._fit_decode(job.width * job.height, sum(len(item.seeds) for item in items))
        # CPU generators, one per image: a seed gives the same initial noise on a CPU test box and on a GPU, and
        # whatever batch the image is part of.
        generators = [torch.Generator("cpu").manual_seed(seed) for item in items for seed in item.seeds]
        common: dict[str, Any] = {
            "num_inference_steps": job.steps,
            "guidance_scale": job.guidance,
            "num_images_per_prompt": 1,  # the embeddings hold one entry per image
            "generator": generators,
        }
        on_latents = _sliced(items)
        if job.refiner is not None:
            split = self._ensemble_split(job)
            # A switch so late that the refiner gets no timestep leaves the whole schedule to the base (below).
            if split[1]:
                return _per_item(items, self._generate_ensemble(job, items, common, split, on_step, on_latents))
        steps = denoising_steps(job.steps, job.strength)
        counter = StepCounter(steps, on_step, on_latents)
        callback = counter.phase(pipe.scheduler, steps)
        # The base's text encoders, whichever pipeline denoises: they are the same modules (and compel's cache).
        # The job's LoRAs on the base's modules (img2img and inpainting share them), prompts encoded inside: a
        # LoRA's text-encoder weights shape them.
        with self.loras.applied(self.pipe, job.loras):
            embeddings = _batched(self.pipe, items)
            result = pipe(**common, **embeddings, **inputs, callback_on_step_end=callback)
        images = list(result.images)
        if first.mask is not None and job.mask_crop_padding is None and first.init is not None:
            # Outside the mask the init image is kept as it was (A1111's overlay; diffusers lays it only over a
            # crop): the VAE's round trip would otherwise change it, and the blurred mask feathers the seam.
            overlay = self.inpaint.image_processor.apply_overlay
            images = [overlay(first.mask, first.init, image) for image in images]
        return _per_item(items, images)

    def _pipeline_for(self, item: BatchItem) -> tuple[Pipeline, dict[str, Any]]:
        """The pipeline that runs the item's kind of job, and what that kind adds to the call."""
        job = item.job
        if item.init is None:
            return self.pipe, {"width": job.width, "height": job.height}
        if item.mask is None:
            # The init image is already the job's size (gpu_runner/input_images.py): img2img takes its size.
            return self.img2img, {"image": item.init, "strength": job.strength}
        return self.inpaint, {
            "image": item.init,
            "mask_image": item.mask,
            "strength": job.strength,
            "padding_mask_crop": job.mask_crop_padding,
            "width": job.width,
            "height": job.height,
        }

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        """Latents (of the base or the refiner: they share the VAE) as images, the way the pipeline decodes its
        last step; on the generator's thread. What an interrupted job returns, as A1111 does."""
        return self.call(self._decode, latents)

    def _decode(self, latents: torch.Tensor) -> list[Image.Image]:
        vae = self.pipe.vae
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        latents = latents.to(vae.device, vae.dtype)
        if mean is not None and std is not None:
            shape = (1, len(mean), 1, 1)
            mean_t = torch.tensor(mean).view(shape).to(latents)
            std_t = torch.tensor(std).view(shape).to(latents)
            latents = latents * std_t / vae.config.scaling_factor + mean_t
        else:
            latents = latents / vae.config.scaling_factor
        with torch.no_grad():
            pixels = vae.decode(latents, return_dict=False)[0]
        images: list[Image.Image] = self.pipe.image_processor.postprocess(pixels, output_type="pil")
        return images

    def _fit_decode(self, pixels: int, images: int) -> None:
        """Decode within DECODE_PIXELS_AT_ONCE: a large image in tiles, a large batch one image at a time.

        Off otherwise: tiles blend at their seams, and one pass is fastest. The refiner shares this VAE.
        """
        vae = self.pipe.vae
        if pixels > self.decode_pixels_at_once:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        if images > 1 and pixels * images > self.decode_pixels_at_once:
            vae.enable_slicing()
        else:
            vae.disable_slicing()

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
        items: Sequence[BatchItem],
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
        with self.loras.applied(self.pipe, job.loras):  # the base's share only: the refiner gets no LoRA
            latents = self.pipe(
                **common,
                **_batched(self.pipe, items),
                width=job.width,
                height=job.height,
                denoising_end=job.refiner_switch_at,
                output_type="latent",
                callback_on_step_end=counter.phase(self.pipe.scheduler, base_steps),
            ).images
        # The same generators, the same number of steps: the refiner runs its share of one schedule.
        result = refiner(
            **common,
            **_batched(refiner, items),  # its text_encoder_2 is the base's: encoded after the LoRAs went off
            image=latents,
            denoising_start=job.refiner_switch_at,
            callback_on_step_end=counter.phase(refiner.scheduler, refiner_steps),
        )
        return list(result.images)


@dataclass(frozen=True)
class BatchItem:
    """One job's share of a pipeline call: its images' seeds, where its previews' latents go, and its input images
    (gpu_runner/input_images.py: fitted to the job's size; an init image for img2img, with a mask to inpaint)."""

    job: Job
    seeds: list[int]
    on_latents: LatentsCallback | None = None
    init: Image.Image | None = None
    mask: Image.Image | None = None


def _batched(pipe: Pipeline, items: Sequence[BatchItem]) -> dict[str, Any]:
    """Every item's prompts encoded on their own (as a job run alone, A1111 weighting included), stacked in image
    order, long prompts' extra 77-token chunks padded across the batch."""
    encoded = [
        prompts.encode_prompts(pipe, item.job.prompt, item.job.negative_prompt, len(item.seeds), item.job.guidance)
        for item in items
    ]
    return prompts.stack(pipe, encoded)


def _sliced(items: Sequence[BatchItem]) -> LatentsCallback | None:
    """The batch's latents callback: each item's own callback with its own images' latents and denoised estimate."""
    if all(item.on_latents is None for item in items):
        return None

    def on_latents(step: int, total: int, latents: torch.Tensor, denoised: torch.Tensor) -> None:
        start = 0
        for item in items:
            if item.on_latents is not None:
                own = slice(start, start + len(item.seeds))
                item.on_latents(step, total, latents[own], denoised[own])
            start += len(item.seeds)

    return on_latents


def _per_item(items: Sequence[BatchItem], images: list[Image.Image]) -> list[list[Image.Image]]:
    starts = list(itertools.accumulate((len(item.seeds) for item in items), initial=0))
    return [images[start:stop] for start, stop in itertools.pairwise(starts)]
