"""Skidio Labs txt2img: `{"input": {"api_key"}, "prompt", ...}`; sync answers with the image.

Seed 000 says only that the sync response "contains the generated image", and its own examples read it with
`.json()`: a job's answer is JSON, `{"job_id", "status", "images": [base64 PNG], "urls", "seeds"}` once it
completed; the raw PNG only for a client whose Accept header prefers `image/png`.

Seed 000 documents no error format; Easel answers `{"error": "<field>: <rule>"}` with 400 (a 409 or 422
elsewhere), 401, 404, 429, 503, 500. A job's state is named as `JobState` names it.
"""

from __future__ import annotations

from typing import Any

from contract.catalog import DEFAULT_MODEL
from contract.errors import (
    INTERNAL_MESSAGE,
    UNAVAILABLE_MESSAGE,
    ClientError,
    InvalidField,
    KafkaUnavailable,
    UnknownName,
)
from contract.states import JobState, JobStatus

GENERATION_FIELDS = {"model", "prompt", "negative_prompt", "width", "height", "batch_size", "steps", "seed",
                     "guidance_scale"}
SDXL = "sdxl"  # Skidio's own name for its model: this server's default model
# The body's names for job fields that Skidio names differently (job field → Skidio's name).
FIELD_NAMES = {"num_images": "batch_size", "guidance": "guidance_scale"}
KEY_FIELD = "input.api_key"


def api_key(body: dict[str, Any]) -> str | None:
    job_input = body.get("input")
    return job_input.get("api_key") if isinstance(job_input, dict) else None


def job_fields(body: dict[str, Any], models: tuple[str, ...] = (DEFAULT_MODEL,)) -> dict[str, Any]:
    """JobSpec fields; `model` is `sdxl` (the default model) or one of `models`, the names this server serves."""
    unknown = sorted(body.keys() - GENERATION_FIELDS - {"input", "webhook"})
    if unknown:
        raise InvalidField("is not a known field", unknown[0])
    model = body.get("model", SDXL)
    if model != SDXL and model not in models:
        raise UnknownName(f"must be one of: {', '.join((SDXL, *models))}", "model")
    to_job = {skidio: job for job, skidio in FIELD_NAMES.items()}
    fields = {to_job.get(k, k): v for k, v in body.items() if k in GENERATION_FIELDS - {"model"}}
    return fields if model == SDXL else {**fields, "model": model}


def render(status: JobStatus, urls: list[str], images: list[str]) -> dict[str, Any]:
    """A job's answer; once it completed, `images` (base64) with their `urls` and `seeds`, in the same order."""
    body: dict[str, Any] = {"job_id": status.job_id, "status": status.state.value}
    if status.state is JobState.COMPLETED:
        body["images"] = images
        body["urls"] = urls
        body["seeds"] = status.seeds
    elif status.progress is not None and not status.is_terminal:
        body["progress"] = status.progress.fraction
    if status.error and status.state is not JobState.COMPLETED:
        body["error"] = status.error
    return body


def wants_png(accept: str) -> bool:
    """Whether an Accept header prefers `image/png` (or `image/*`) to JSON; `*/*` and ties answer JSON."""
    png = json = 0.0
    for entry in accept.split(","):
        media_type, *params = (part.strip() for part in entry.split(";"))
        quality = _quality(params)
        if media_type.lower() in ("image/png", "image/*"):
            png = max(png, quality)
        elif media_type.lower() in ("application/json", "application/*", "*/*"):
            json = max(json, quality)
    return png > json


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def error_answer(error: Exception) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for a client's error, Kafka being unavailable, or anything else (a 500)."""
    if isinstance(error, ClientError):
        message = f"{error.field}: {error.rule}" if error.field else error.rule
        return (400 if error.status in (409, 422) else error.status), {"error": message}
    if isinstance(error, KafkaUnavailable):
        return 503, {"error": UNAVAILABLE_MESSAGE}
    return 500, {"error": INTERNAL_MESSAGE}
