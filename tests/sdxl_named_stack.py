"""A stack that serves the tiny model under SDXL's real names, as the demo does: the base as `sd_xl_base_1.0`,
a tiny refiner as `sd_xl_refiner_1.0` (what seed 001 names)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gpu_runner.tiny_model import save_tiny_refiner
from tests.processes import HOME, Stack, make_stack

BASE_NAME = "sd_xl_base_1.0"
REFINER_NAME = "sd_xl_refiner_1.0"


@contextmanager
def sdxl_named_stack(bootstrap: str, workdir: Path, prefix: str) -> Iterator[Stack]:
    """An API and a runner (ready) on `prefix`; stopped on exit, even when starting failed."""
    stack = make_stack(bootstrap, workdir, prefix, HOME)
    stack.env |= {
        "EASEL_MODEL_NAME": BASE_NAME,
        "EASEL_REFINER": str(save_tiny_refiner(workdir / "refiner")),
        "EASEL_REFINER_NAME": REFINER_NAME,
    }
    try:
        stack.start_api()
        stack.start_runner(f"{prefix}-runner").wait_for_output("runner ready")
        yield stack
    finally:
        stack.stop()
