"""Do previews slow generation? The same job with and without them, interleaved, in-process.

Previews are made in the generation thread (latents → RGB → JPEG), so their cost is what the job
pays. Also timed alone at SDXL's real size (a 1024² image: 128×128 latents → 256×256 JPEG).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch

from bench.results import report
from contract.job import Job
from gpu_runner.pipeline import SDXLGenerator, resolve_model
from gpu_runner.previews import preview_event_data, preview_interval, wants_preview

REPO = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("BENCH_PREVIEW_RUNS", "10"))
SPEC = {"prompt": "a lighthouse at dusk", "width": 512, "height": 512, "steps": 20, "seed": 11}


def main() -> None:
    generator = SDXLGenerator(resolve_model("", REPO / ".easel"), "cpu")
    job = Job(**SPEC, id="bench", owner="bench", preview=True)
    interval = preview_interval(job.steps)

    def on_latents(step: int, total: int, latents: torch.Tensor, denoised: torch.Tensor) -> None:
        if wants_preview(step, total, interval):
            preview_event_data(denoised, step, total, job.width, job.height)

    def timed(with_previews: bool) -> float:
        started = time.perf_counter()
        generator.generate(job, [11], lambda step, total: None, on_latents if with_previews else None)
        return time.perf_counter() - started

    for _ in range(2):  # warm-up
        timed(False), timed(True)
    without, with_ = [], []
    for _ in range(RUNS):
        without.append(timed(False))
        with_.append(timed(True))
    latents = torch.randn(1, 4, 128, 128)
    singles = []
    for _ in range(50):
        started = time.perf_counter()
        preview_event_data(latents, 1, 30, 1024, 1024)
        singles.append(time.perf_counter() - started)
    result = {
        "benchmark": "preview cost",
        "job": SPEC,
        "previews_per_job": sum(wants_preview(s, job.steps, interval) for s in range(1, job.steps + 1)),
        "runs": RUNS,
        "without_previews_ms": _ms(without),
        "with_previews_ms": _ms(with_),
        "difference_median_ms": round((statistics.median(with_) - statistics.median(without)) * 1000, 2),
        "one_preview_1024px_ms": _ms(singles),
        "preview_1024px_bytes_base64": len(preview_event_data(latents, 1, 30, 1024, 1024)["image"]),
    }
    report("previews", result)


def _ms(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values) * 1000, 2), "stdev": round(statistics.stdev(values) * 1000, 2)}


if __name__ == "__main__":
    main()
