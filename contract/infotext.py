"""A1111's "infotext": the parameters line that A1111 writes into each PNG and reports in `info`.

Kept in the contract because two sides use it: the runner (PNG `parameters` text chunk) and the
A1111 dialect (`info.infotexts`).
"""

from __future__ import annotations

import json
from typing import Any

from contract.samplers import SCHEDULE_INFO


def infotext(spec: dict[str, Any], seed: int, model: str = "default") -> str:
    params: dict[str, Any] = {
        "Steps": spec.get("steps"),
        "Sampler": spec.get("sampler"),
        "Schedule type": _schedule_label(spec.get("schedule")),
        "CFG scale": spec.get("guidance"),
        "Seed": seed,
        "Size": f"{spec.get('width')}x{spec.get('height')}",
        "Model": model,
        "Denoising strength": spec.get("strength") if spec.get("init_image") else None,  # img2img only, as A1111
        "Mask blur": spec.get("mask_blur") if spec.get("mask_image") else None,  # inpainting only
        "Refiner": spec.get("refiner"),  # A1111 writes both only when a refiner ran
        "Refiner switch at": spec.get("refiner_switch_at") if spec.get("refiner") else None,
        "Version": "easel",
    }
    line = ", ".join(f"{key}: {_quote(value)}" for key, value in params.items() if value is not None)
    lines = [str(spec.get("prompt", ""))]
    if spec.get("negative_prompt"):
        lines.append(f"Negative prompt: {spec['negative_prompt']}")
    lines.append(line)
    return "\n".join(lines)


def _schedule_label(schedule: Any) -> str:
    known = SCHEDULE_INFO.get(str(schedule))
    return known.label if known else SCHEDULE_INFO["automatic"].label


def _quote(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if any(c in text for c in ",:\n") else text
