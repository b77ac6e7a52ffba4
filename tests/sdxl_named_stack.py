"""A stack that serves the tiny model under SDXL's real names, as the demo does: the base as `sd_xl_base_1.0`,
a tiny refiner as `sd_xl_refiner_1.0` (what seed 001 names)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gpu_runner.tiny_model import save_tiny_refiner
from tests.processes import HOME, Stack, make_stack

BASE_NAME = "sd_xl_base_1.0"
REFINER_NAME = "sd_xl_refiner_1.0"
# Seed 001's A1111 payload, verbatim (the RunPod A1111 worker wraps it in {"input": {"api": ..., "payload": ...}}).
SEED_001_PAYLOAD: dict[str, Any] = {
    "override_settings": {"sd_model_checkpoint": "sd_xl_base_1.0", "sd_vae": "sdxl_vae.safetensors"},
    "override_settings_restore_afterwards": True,
    "refiner_checkpoint": "sd_xl_refiner_1.0",
    "refiner_switch_at": 0.8,
    "prompt": "an astronaut riding a horse",
    "negative_prompt": "",
    "seed": -1,
    "batch_size": 1,
    "steps": 30,
    "cfg_scale": 7,
    "width": 1024,
    "height": 1024,
    "sampler_name": "DPM++ SDE",
    "sampler_index": "DPM++ SDE",
    "scheduler": "karras",
    "restore_faces": False,
}


@contextmanager
def sdxl_named_stack(bootstrap: str, workdir: Path, prefix: str) -> Iterator[Stack]:
    """An API and a runner (ready) on `prefix`; stopped on exit, even when starting failed."""
    stack = make_stack(bootstrap, workdir, prefix, HOME)
    stack.env |= {
        "EASEL_MODEL_NAME": BASE_NAME,
        "EASEL_REFINER": str(save_tiny_refiner(workdir / "refiner")),
        "EASEL_REFINER_NAME": REFINER_NAME,
    }
    with stack.serving(f"{prefix}-runner") as serving:
        yield serving
