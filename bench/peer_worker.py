"""The peer of bench/peer.py: runpod-python's local API server (`--rp_serve_api`) with an inline handler.

The handler is what a RunPod SDXL worker does: run the pipeline in the request, encode a PNG as Pillow does by
default (zlib level 6, as AUTOMATIC1111 saves it) and answer base64. Same pipeline code and tiny model as Easel's
runner (SDXLGenerator, its one torch thread). Run: `python -m bench.peer_worker --rp_serve_api --rp_api_port N`.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import runpod

from contract.job import Job
from gpu_runner.pipeline import SDXLGenerator, resolve_model

HOME = Path(__file__).resolve().parent.parent / ".easel"


def make_handler(generator: SDXLGenerator) -> Any:
    def handler(request: dict[str, Any]) -> dict[str, Any]:
        job = Job(**request["input"], id=request["id"], owner="peer")
        [image] = generator.generate(job, [job.seed or 0], lambda step, total: None)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return {"images": [base64.b64encode(buffer.getvalue()).decode()]}

    return handler


def main() -> None:
    generator = SDXLGenerator(resolve_model("", HOME), "cpu")
    runpod.serverless.start({"handler": make_handler(generator)})


if __name__ == "__main__":
    main()
