"""What img2img and inpainting cost next to txt2img: the same job (tiny model, 256², 20 steps, Euler), in-process,
as txt2img, as img2img at strength 0.5 and as inpainting at 0.5, in interleaved rounds so all three see the
same machine.

At strength 0.5 diffusers runs the last int(20 × 0.5) = 10 of the schedule's 20 steps, so the UNet (most of a
real model's time) is called half as often; img2img adds one VAE encode of the init image. The UNet calls of
each job are counted with a forward hook: the step count the progress events report is the work that was done.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from PIL import Image, ImageDraw

from bench.overhead import percentile
from bench.results import report
from contract.job import Job
from gpu_runner.input_images import fit_init, fit_mask
from gpu_runner.pipeline import BatchItem, SDXLGenerator, resolve_model

REPO = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("BENCH_IMG2IMG_ROUNDS", "12"))
SIDE, STEPS, STRENGTH = 256, 20, 0.5
SPEC: dict[str, object] = {"prompt": "a lighthouse at dusk", "width": SIDE, "height": SIDE, "steps": STEPS, "seed": 5}


def _init() -> Image.Image:
    image = Image.radial_gradient("L").convert("RGB").resize((SIDE, SIDE))
    ImageDraw.Draw(image).ellipse((40, 40, 140, 140), fill=(30, 60, 200))
    return image


def _mask() -> Image.Image:
    mask = Image.new("L", (SIDE, SIDE))
    mask.paste(255, (64, 64, 192, 192))
    return mask


def main() -> None:
    generator = SDXLGenerator(resolve_model("", REPO / ".easel"), "cpu")
    init, mask = fit_init(_init(), SIDE, SIDE), fit_mask(_mask(), SIDE, SIDE, 4)
    img2img = {"init_image": "bench/init.png", "strength": STRENGTH}
    kinds: dict[str, BatchItem] = {
        "txt2img": BatchItem(Job.model_validate({**SPEC, "id": "bench", "owner": "bench"}), [5]),
        "img2img": BatchItem(Job.model_validate({**SPEC, **img2img, "id": "bench", "owner": "bench"}), [5], init=init),
        "inpaint": BatchItem(
            Job.model_validate({**SPEC, **img2img, "mask_image": "bench/mask.png", "id": "bench", "owner": "bench"}),
            [5], init=init, mask=mask,
        ),
    }
    unet_calls = [0]
    generator.pipe.unet.register_forward_hook(lambda module, args, output: unet_calls.__setitem__(0, unet_calls[0] + 1))

    def timed(item: BatchItem) -> tuple[float, int, tuple[int, int]]:
        """Seconds, UNet calls, and the last progress report (step, total)."""
        unet_calls[0] = 0
        reports: list[tuple[int, int]] = []
        started = time.perf_counter()
        generator.generate_batch([item], lambda step, total: reports.append((step, total)))
        return time.perf_counter() - started, unet_calls[0], reports[-1]

    for item in kinds.values():  # warm-up
        timed(item)
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    calls: dict[str, int] = {}
    steps: dict[str, tuple[int, int]] = {}
    for _ in range(ROUNDS):
        for kind, item in kinds.items():
            elapsed, calls[kind], steps[kind] = timed(item)
            seconds[kind].append(elapsed)
    p50 = {kind: percentile(values, 50) for kind, values in seconds.items()}
    report("img2img", {
        "benchmark": "img2img / inpainting vs txt2img (interleaved, in-process, CPU, tiny model)",
        "job": {**SPEC, "sampler": "Euler", "strength": STRENGTH},
        "rounds": ROUNDS,
        "p50_s": {kind: round(value, 4) for kind, value in p50.items()},
        "ratio_to_txt2img": {kind: round(value / p50["txt2img"], 3) for kind, value in p50.items()},
        "unet_calls_per_job": calls,
        "last_progress_step_of_total": {kind: f"{step}/{total}" for kind, (step, total) in steps.items()},
    })


if __name__ == "__main__":
    main()
