"""AUTOMATIC1111's /sdapi/v1: txt2img payloads in, `{images, parameters, info}` out.

Errors as A1111 (FastAPI) answers them: 422 `{"detail": [{"loc", "msg", "type"}]}` for a bad body (malformed
JSON included), `{"detail": "Not Found"}` for an unknown route, and A1111's own
`{"error", "detail", "body", "errors"}` for the rest, an unknown sampler (404 `Sampler not found`) included.
"""

from __future__ import annotations

import json
import time
from typing import Any

from contract.catalog import DEFAULT_MODEL, refiner_rule
from contract.errors import (
    INTERNAL_MESSAGE,
    UNAVAILABLE_MESSAGE,
    ClientError,
    InvalidField,
    KafkaUnavailable,
    MalformedBody,
    MethodNotAllowed,
    NotFound,
    UnknownName,
)
from contract.infotext import infotext
from contract.states import JobState, JobStatus
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
# The payload's names for job fields that A1111 names differently (job field → A1111's name).
FIELD_NAMES = {"guidance": "cfg_scale", "sampler": "sampler_name", "schedule": "scheduler", "num_images": "batch_size",
               "model": "override_settings.sd_model_checkpoint"}
# txt2img is synchronous: a job that did not complete is an error answer, with this status.
_NOT_COMPLETED_STATUS = {JobState.FAILED: 500, JobState.CANCELLED: 409, JobState.TIMED_OUT: 409}
DID_NOT_FINISH_STATUS = 504
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
            raise InvalidField(rule, field)
    if p.get("subseed_strength"):
        raise InvalidField("variation seeds are not supported; use 0", "subseed_strength")
    refiner = p.get("refiner_checkpoint") or None
    if refiner is not None and refiner not in refiner_names:
        raise UnknownName(refiner_rule(refiner_names), "refiner_checkpoint")
    overrides = p.get("override_settings") or {}
    if not isinstance(overrides, dict):
        raise InvalidField("must be an object", "override_settings")
    checkpoint = overrides.get("sd_model_checkpoint")
    if checkpoint is not None and checkpoint not in model_names:
        raise UnknownName(f"must be one of: {', '.join(model_names)}", "override_settings.sd_model_checkpoint")
    sampler, schedule = resolve(p.get("sampler_name") or p.get("sampler_index"), p.get("scheduler"))
    images = _int(p, "batch_size") * _int(p, "n_iter")
    if not 1 <= images <= 4:
        raise InvalidField("batch_size × n_iter must be between 1 and 4", "batch_size")
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
        raise InvalidField("must be an integer", field)
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


def txt2img_answer(status: JobStatus, images_b64: list[str], payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of a synchronous txt2img once its job ended, or the wait for it did."""
    if status.state is JobState.COMPLETED:
        return 200, txt2img_response(status, images_b64, payload)
    if not status.is_terminal:  # A1111 has no "come back later": say it did not finish
        return DID_NOT_FINISH_STATUS, _exception_body(
            status.state.value, f"job {status.job_id} did not finish in time; it is {status.state.value}"
        )
    error = status.error or status.state.value.lower()
    return _NOT_COMPLETED_STATUS[status.state], _exception_body(status.state.value, error)


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
            "interrupted": status is not None and status.state is JobState.CANCELLED,
            "stopping_generation": False,
            "job": status.job_id if active and status else "",
            "job_count": 1 if active else 0,
            "job_timestamp": time.strftime("%Y%m%d%H%M%S", time.gmtime(status.created_at)) if status else "0",
            "job_no": 0,
            "sampling_step": step,
            "sampling_steps": total,
        },
        "current_image": current_image,  # base64 JPEG of the latest preview, for jobs with previews on
        "textinfo": "In queue" if status is not None and status.state is JobState.IN_QUEUE else None,
    }


def error_answer(error: Exception) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) in the shape FastAPI or A1111's own exception handler gives each case."""
    if isinstance(error, UnknownName) and error.field == "sampler_name":
        return 404, _exception_body("HTTPException", f"Sampler not found: {error.rule}", status=404)
    if isinstance(error, InvalidField | MalformedBody):
        return 422, {"detail": _validation_details(error)}
    if isinstance(error, NotFound | MethodNotAllowed):  # FastAPI's own answer for a route
        return error.status, {"detail": error.message}
    if isinstance(error, ClientError):
        return error.status, _exception_body("HTTPException", error.message, status=error.status)
    if isinstance(error, KafkaUnavailable):
        return 503, _exception_body("HTTPException", UNAVAILABLE_MESSAGE, status=503)
    return 500, _exception_body("InternalServerError", INTERNAL_MESSAGE)


def _exception_body(error: str, detail: str, status: int | None = None) -> dict[str, Any]:
    """A1111's exception handler: the exception's name, its detail, and `str(e)` (`"404: ..."` for HTTPException)."""
    return {"error": error, "detail": detail, "body": "", "errors": f"{status}: {detail}" if status else detail}


def _validation_details(error: ClientError) -> list[dict[str, Any]]:
    if isinstance(error, MalformedBody):
        return [{"loc": ["body"], "msg": error.rule, "type": "json_invalid"}]
    problems = error.details or [{"field": error.field or "body", "rule": error.rule, "type": "value_error"}]
    return [
        {"loc": ["body", *(p["field"].split(".") if p["field"] != "body" else [])], "msg": p["rule"], "type": p["type"]}
        for p in problems
    ]
