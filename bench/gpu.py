"""SDXL 1024², 30 steps on a GPU: the bare diffusers pipeline vs Easel's generator (fp16 with the fp16-safe VAE,
bf16 with the model's own VAE, fp16 with a compiled UNet), rounds interleaved, it/s and seconds per image.

Run: `EASEL_MODEL=<SDXL base folder or hub id> .venv/bin/python -m bench.gpu` (EASEL_VAE-style override:
BENCH_GPU_VAE, default madebyollin/sdxl-vae-fp16-fix; EASEL_DEVICE picks the GPU). Without CUDA it reports
"skipped: no GPU" and exits at once. The compiled variant's warm-up compiles 1024² first (minutes). All four
pipelines stay loaded (about 30 GB of GPU memory) so the rounds can interleave.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from bench.results import report
from contract.job import Job
from contract.settings import Settings

if TYPE_CHECKING:
    from diffusers import StableDiffusionXLPipeline

    from gpu_runner.pipeline import SDXLGenerator

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
PROMPT = "a lighthouse at dusk, oil painting"
SIZE, STEPS, SEED = 1024, 30, 11
ROUNDS = 5
JOB = Job(id="bench-gpu", owner="bench", prompt=PROMPT, width=SIZE, height=SIZE, steps=STEPS, seed=SEED)


class Timing:
    """One image's wall time and its denoising rate, from the step callbacks' timestamps."""

    def __init__(self) -> None:
        self.steps: list[float] = []

    def step(self) -> None:
        torch.cuda.synchronize()
        self.steps.append(time.perf_counter())

    def iterations_per_s(self) -> float:
        return (len(self.steps) - 1) / (self.steps[-1] - self.steps[0])


def bare_run(pipe: StableDiffusionXLPipeline) -> Callable[[Timing], None]:
    def run(timing: Timing) -> None:
        def on_step(pipe: object, i: int, t: object, kwargs: dict[str, object]) -> dict[str, object]:
            timing.step()
            return kwargs

        pipe(
            prompt=PROMPT, width=SIZE, height=SIZE, num_inference_steps=STEPS, guidance_scale=JOB.guidance,
            generator=torch.Generator("cpu").manual_seed(SEED), callback_on_step_end=on_step,
        )

    return run


def easel_run(generator: SDXLGenerator) -> Callable[[Timing], None]:
    def run(timing: Timing) -> None:
        generator.generate(JOB, [SEED], lambda step, total: timing.step())

    return run


def measure(run: Callable[[Timing], None]) -> tuple[float, float]:
    """Seconds for one image (prompt encoding and VAE decode included) and its denoising it/s."""
    timing = Timing()
    torch.cuda.synchronize()
    started = time.perf_counter()
    run(timing)
    torch.cuda.synchronize()
    return time.perf_counter() - started, timing.iterations_per_s()


def main() -> None:
    if not torch.cuda.is_available():
        report("gpu", {"skipped": "no GPU"})
        return
    # Only now: diffusers takes seconds to import, and a machine without a GPU has nothing to measure.
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline

    from gpu_runner.pipeline import FP16_SAFE_VAE, SDXLGenerator, pick_device

    settings = Settings.from_env()
    model = settings.model or SDXL_BASE
    vae = os.environ.get("BENCH_GPU_VAE", FP16_SAFE_VAE)
    device = pick_device(settings.device)
    bare = StableDiffusionXLPipeline.from_pretrained(
        model, vae=AutoencoderKL.from_pretrained(vae, dtype=torch.float16), dtype=torch.float16, add_watermarker=False
    ).to(device)
    bare.set_progress_bar_config(disable=True)
    variants: dict[str, Callable[[Timing], None]] = {"bare fp16": bare_run(bare)}
    loaders: dict[str, Callable[[], SDXLGenerator]] = {
        "easel fp16": lambda: SDXLGenerator(model, device, dtype="fp16", vae=vae),
        "easel bf16": lambda: SDXLGenerator(model, device, dtype="bf16"),  # the model's own VAE, no fp32 decode
        "easel fp16 compiled": lambda: SDXLGenerator(model, device, dtype="fp16", vae=vae, compile_unet=True),
    }
    for name, load in loaders.items():
        generator = load()
        started = time.perf_counter()
        generator.warm_up()
        print(f"{name}: warm-up {time.perf_counter() - started:.1f} s", flush=True)
        variants[name] = easel_run(generator)
    measure(variants["bare fp16"])  # the bare pipeline's warm-up
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, run in variants.items():
            samples[name].append(measure(run))
    bare_s = statistics.median(s for s, _ in samples["bare fp16"])
    report("gpu", {
        "gpu": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "model": model,
        "job": f"{SIZE}x{SIZE}, {STEPS} steps, Euler, batch 1, {ROUNDS} interleaved rounds (medians)",
        "variants": {
            name: {
                "s_per_image": round(statistics.median(s for s, _ in runs), 3),
                "it_per_s": round(statistics.median(rate for _, rate in runs), 2),
                "vs_bare": round(statistics.median(s for s, _ in runs) / bare_s, 3),
            }
            for name, runs in samples.items()
        },
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 1),
    })


if __name__ == "__main__":
    main()
