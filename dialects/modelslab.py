"""ModelsLab realtime text2img (v6): `key` in the body; answers success / processing / error.

Errors are `{"status": "error", "message": ...}` with ModelsLab's codes: 400 (a 409 or 422 elsewhere),
401 `Invalid API key`, 404, 429 (with `retry_after`), 503, 500. A job that failed is HTTP 200 with status `error`.
"""

from __future__ import annotations

import secrets
from typing import Any

from contract.catalog import SAFETY_CHECKER_RULE
from contract.errors import (
    INTERNAL_MESSAGE,
    UNAVAILABLE_MESSAGE,
    ClientError,
    InvalidField,
    KafkaUnavailable,
    QueueFull,
    Unauthorized,
)
from contract.states import JobState, JobStatus

# How ModelsLab names a job's state in a response, and in a webhook (which says `failed` where responses say `error`).
RESPONSE_STATUS = {
    JobState.IN_QUEUE: "processing",
    JobState.IN_PROGRESS: "processing",
    JobState.COMPLETED: "success",
    JobState.FAILED: "error",
    JobState.CANCELLED: "error",
    JobState.TIMED_OUT: "error",
}
WEBHOOK_STATUS = RESPONSE_STATUS | {state: "failed" for state, name in RESPONSE_STATUS.items() if name == "error"}
# The body's names for job fields that ModelsLab names differently (job field → ModelsLab's name).
FIELD_NAMES = {"num_images": "samples", "steps": "num_inference_steps", "guidance": "guidance_scale"}
FIELDS = {"key", "prompt", "negative_prompt", "width", "height", "samples", "safety_checker", "seed",
          "instant_response", "base64", "webhook", "track_id", "num_inference_steps", "guidance_scale"}
MAX_SIDE = 1024  # ModelsLab's documented limit for realtime
DEFAULT_STEPS = 20


def new_job_id() -> str:
    """ModelsLab's ids are numbers: a random one that is safe as a JavaScript number."""
    return str(secrets.randbelow(2**53 - 1) + 1)


def job_fields(body: dict[str, Any], safety_checker_available: bool = False) -> dict[str, Any]:
    """JobSpec fields from a text2img body; numeric strings are accepted where ModelsLab sends them.

    `safety_checker_available`: a checker is configured, so `safety_checker: true` can be honoured.
    """
    unknown = sorted(body.keys() - FIELDS)
    if unknown:
        raise InvalidField("is not a known field", unknown[0])
    safety_checker = _flag(body, "safety_checker")
    if safety_checker and not safety_checker_available:
        raise InvalidField(SAFETY_CHECKER_RULE, "safety_checker")
    fields: dict[str, Any] = {
        "prompt": body.get("prompt"),
        "negative_prompt": body.get("negative_prompt") or "",
        "width": _side(body, "width"),
        "height": _side(body, "height"),
        "num_images": _number(body, "samples", 1, int),
        "steps": _number(body, "num_inference_steps", DEFAULT_STEPS, int),
        "guidance": _number(body, "guidance_scale", 7.5, float),
        "seed": body.get("seed"),
        "safety_checker": safety_checker,
    }
    if not 1 <= fields["num_images"] <= 4:
        raise InvalidField("samples must be between 1 and 4", "samples")
    return fields


def _number(body: dict[str, Any], field: str, default: float, kind: type[int] | type[float]) -> Any:
    value = body.get(field)
    if value is None:
        return default
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)  # ModelsLab clients send numbers or numeric strings ("512")
    except (TypeError, ValueError):
        raise InvalidField(f"{field} must be a number", field) from None
    if kind is int and not number.is_integer():
        raise InvalidField(f"{field} must be a whole number", field)
    return kind(number)


def _flag(body: dict[str, Any], field: str) -> bool:
    """A boolean; ModelsLab clients also send "yes" / "no" (and the strings "true" / "false")."""
    value = body.get(field)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("yes", "true", "no", "false"):
        return value.lower() in ("yes", "true")
    raise InvalidField(f"{field} must be true or false", field)


def _side(body: dict[str, Any], field: str) -> int:
    value = _number(body, field, 512, int)
    if not 64 <= value <= MAX_SIDE:
        raise InvalidField(f"{field} must be between 64 and {MAX_SIDE}", field)
    if value % 8:
        raise InvalidField(f"{field} must be divisible by 8", field)
    return int(value)


def meta(status: JobStatus) -> dict[str, Any]:
    spec = status.spec
    return {
        "prompt": spec.get("prompt"),
        "negative_prompt": spec.get("negative_prompt", ""),
        "width": spec.get("width"),
        "height": spec.get("height"),
        "samples": spec.get("num_images"),
        "num_inference_steps": spec.get("steps"),
        "guidance_scale": spec.get("guidance"),
        "seed": status.seeds[0] if status.seeds else spec.get("seed"),
        "safety_checker": "yes" if spec.get("safety_checker") else "no",
        "file_prefix": status.job_id,
    }


def render(
    status: JobStatus, urls: list[str], base64_images: list[str] | None, fetch_url: str, webhook: bool = False
) -> dict[str, Any]:
    """The success / processing / error union for a job's current status (`webhook`: as a webhook names it)."""
    job_id = int(status.job_id) if status.job_id.isdigit() else status.job_id
    name = (WEBHOOK_STATUS if webhook else RESPONSE_STATUS)[status.state]
    if status.state is JobState.COMPLETED:
        output = base64_images if base64_images is not None else urls
        return {
            "status": name,
            "generationTime": round((status.finished_at or 0) - (status.started_at or 0), 3),
            "id": job_id,
            "output": output,
            "proxy_links": urls,
            "meta": meta(status),
            # One flag for the response, as ModelsLab has it: did the checker black out any image.
            "nsfw_content_detected": any(status.nsfw_content_detected),
        }
    if status.is_terminal:
        return {"status": name, "id": job_id, "message": status.error or status.state.value.lower()}
    eta = status.progress.eta_s if status.progress else float(status.spec.get("steps") or 20) * 0.1
    running = status.state is JobState.IN_PROGRESS
    return {
        "status": name,
        "tip": "Poll fetch_result, or the future_links directly; they answer 404 until the images are ready.",
        "eta": round(eta, 2),
        "message": "Your image is being generated." if running else "Your request is queued.",
        "fetch_result": fetch_url,
        "id": job_id,
        "output": [],
        "meta": meta(status),
        "future_links": urls,
    }


def error_answer(error: Exception) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for a client's error, Kafka being unavailable, or anything else (a 500)."""
    if isinstance(error, QueueFull):
        return error.status, {"status": "error", "message": error.message, "retry_after": error.retry_after_s}
    if isinstance(error, Unauthorized):
        return error.status, {"status": "error", "message": "Invalid API key"}
    if isinstance(error, InvalidField) and error.field and error.rule.startswith(error.field):
        return 400, {"status": "error", "message": error.rule}  # ModelsLab's own wording: "samples must be ..."
    if isinstance(error, ClientError):
        return (400 if error.status in (409, 422) else error.status), {"status": "error", "message": error.message}
    if isinstance(error, KafkaUnavailable):
        return 503, {"status": "error", "message": UNAVAILABLE_MESSAGE}
    return 500, {"status": "error", "message": INTERNAL_MESSAGE}
