"""AUTOMATIC1111's /sdapi/v1: txt2img payloads in, `{images, parameters, info}` out."""

from __future__ import annotations

import json
import time
from typing import Any

from contract.catalog import DEFAULT_MODEL, refiner_rule
from contract.infotext import infotext
from contract.states import JobStatus
from dialects.errors import DialectError
from dialects.samplers import resolve

# A1111's API defaults (modules/api/models.py, processing.py).
TXT2IMG_DEFAULTS: dict[str, Any] = {
    "prompt": "",
    "negative_prompt": "",
    "seed": -1,
    "subseed": -1,
    "subseed_strength": 0,
    "sampler_name": None,
    "sampler_index": "Euler",
    "scheduler": None,
    "batch_size": 1,
    "n_iter": 1,
    "steps": 50,
    "cfg_scale": 7.0,
    "width": 512,
    "height": 512,
    "restore_faces": False,
    "tiling": False,
    "enable_hr": False,
    "override_settings": {},
    "override_settings_restore_afterwards": True,
    "refiner_checkpoint": None,
    "refiner_switch_at": None,
    "send_images": True,
    "save_images": False,
}
# Features that would change the picture and that Easel does not do: refused, never ignored.
_UNSUPPORTED = {
    "enable_hr": "hires fix is not supported",
    "restore_faces": "face restoration is not supported",
    "tiling": "tiling is not supported",
}


def with_defaults(payload: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    return {**(defaults or TXT2IMG_DEFAULTS), **payload}


def job_fields(
    payload: dict[str, Any],
    model_names: tuple[str, ...],
    defaults: dict[str, Any] | None = None,
    refiner_names: tuple[str, ...] = (),
) -> dict[str, Any]:
    """JobSpec fields from a txt2img payload (A1111 defaults filled in).

    `model_names` / `refiner_names`: what `sd_model_checkpoint` / `refiner_checkpoint` may name.
    """
    p = with_defaults(payload, defaults)
    for field, rule in _UNSUPPORTED.items():
        if p.get(field):
            raise DialectError(field, rule)
    if p.get("subseed_strength"):
        raise DialectError("subseed_strength", "variation seeds are not supported; use 0")
    refiner = p.get("refiner_checkpoint") or None
    if refiner is not None and refiner not in refiner_names:
        raise DialectError("refiner_checkpoint", refiner_rule(refiner_names))
    overrides = p.get("override_settings") or {}
    if not isinstance(overrides, dict):
        raise DialectError("override_settings", "must be an object")
    checkpoint = overrides.get("sd_model_checkpoint")
    if checkpoint is not None and checkpoint not in model_names:
        raise DialectError("override_settings.sd_model_checkpoint", f"must be one of: {', '.join(model_names)}")
    sampler, schedule = resolve(p.get("sampler_name") or p.get("sampler_index"), p.get("scheduler"))
    images = _int(p, "batch_size") * _int(p, "n_iter")
    if not 1 <= images <= 4:
        raise DialectError("batch_size", "batch_size × n_iter must be between 1 and 4")
    return {
        "prompt": p["prompt"],
        "negative_prompt": p.get("negative_prompt") or "",
        "width": p["width"],
        "height": p["height"],
        "steps": p["steps"],
        "guidance": p["cfg_scale"],
        "sampler": sampler,
        "schedule": schedule,
        "seed": p["seed"],
        "num_images": images,
        "model": checkpoint or DEFAULT_MODEL,
    } | _refiner_fields(refiner, p.get("refiner_switch_at"))


def _refiner_fields(refiner: str | None, switch_at: Any) -> dict[str, Any]:
    """A1111 ignores `refiner_switch_at` without a refiner; with one, the contract defaults it to 0.8."""
    if refiner is None:
        return {}
    return {"refiner": refiner, "refiner_switch_at": switch_at}


def _int(p: dict[str, Any], field: str) -> int:
    value = p.get(field)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DialectError(field, "must be an integer")
    return value


def info(status: JobStatus, model: str = "default") -> str:
    """The `info` JSON *string* with A1111's keys."""
    spec = status.spec
    seeds = status.seeds or [spec.get("seed") or -1]
    n = len(seeds)
    created = time.strftime("%Y%m%d%H%M%S", time.gmtime(status.created_at))
    return json.dumps(
        {
            "prompt": spec.get("prompt"),
            "all_prompts": [spec.get("prompt")] * n,
            "negative_prompt": spec.get("negative_prompt", ""),
            "all_negative_prompts": [spec.get("negative_prompt", "")] * n,
            "seed": seeds[0],
            "all_seeds": seeds,
            "subseed": -1,
            "all_subseeds": [-1] * n,
            "subseed_strength": 0,
            "width": spec.get("width"),
            "height": spec.get("height"),
            "sampler_name": spec.get("sampler"),
            "cfg_scale": spec.get("guidance"),
            "steps": spec.get("steps"),
            "batch_size": n,
            "restore_faces": False,
            "face_restoration_model": None,
            "sd_model_name": model,
            "sd_model_hash": None,
            "seed_resize_from_w": -1,
            "seed_resize_from_h": -1,
            "denoising_strength": 0,
            "extra_generation_params": {"Schedule type": spec.get("schedule")},
            "index_of_first_image": 0,
            "infotexts": [infotext(spec, seed, model) for seed in seeds],
            "styles": [],
            "job_timestamp": created,
            "clip_skip": 1,
            "is_using_inpainting_conditioning": False,
            "version": "easel",
        }
    )


def txt2img_response(status: JobStatus, images_b64: list[str], payload: dict[str, Any]) -> dict[str, Any]:
    return {"images": images_b64, "parameters": with_defaults(payload), "info": info(status)}


def progress(status: JobStatus | None, current_image: str | None = None) -> dict[str, Any]:
    """GET /sdapi/v1/progress for the key's most recent job (A1111 itself reports the one running job)."""
    step = total = 0
    fraction = eta = 0.0
    if status is not None and status.progress is not None and not status.is_terminal:
        step, total = status.progress.step, status.progress.total
        fraction, eta = status.progress.fraction, status.progress.eta_s
    active = status is not None and not status.is_terminal
    return {
        "progress": fraction,
        "eta_relative": eta,
        "state": {
            "skipped": False,
            "interrupted": status is not None and status.state.value == "CANCELLED",
            "stopping_generation": False,
            "job": status.job_id if active and status else "",
            "job_count": 1 if active else 0,
            "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.gmtime(status.created_at)) if status else "0",
            "job_no": 0,
            "sampling_step": step,
            "sampling_steps": total,
        },
        "current_image": current_image,  # base64 JPEG of the latest preview, for jobs with previews on
        "textinfo": "In queue" if status is not None and status.state.value == "IN_QUEUE" else None,
    }
