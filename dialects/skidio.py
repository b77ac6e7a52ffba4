"""Skidio Labs txt2img: `{"input": {"api_key"}, "prompt", ...}`; sync answers with the image.

Seed 000 documents no error format; Easel answers `{"error": "<field>: <rule>"}` with 400 (a 409 or 422
elsewhere), 401, 404, 429, 503, 500. A job's state is named as `JobState` names it.
"""

from __future__ import annotations

from typing import Any

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
MODELS = ("sdxl",)  # the model names Skidio clients send that this server serves
# The body's names for job fields that Skidio names differently (job field → Skidio's name).
FIELD_NAMES = {"num_images": "batch_size", "guidance": "guidance_scale"}
KEY_FIELD = "input.api_key"


def api_key(body: dict[str, Any]) -> str | None:
    job_input = body.get("input")
    return job_input.get("api_key") if isinstance(job_input, dict) else None


def job_fields(body: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(body.keys() - GENERATION_FIELDS - {"input", "webhook"})
    if unknown:
        raise InvalidField("is not a known field", unknown[0])
    model = body.get("model", "sdxl")
    if model not in MODELS:
        raise UnknownName(f"must be one of: {', '.join(MODELS)}", "model")
    to_job = {skidio: job for job, skidio in FIELD_NAMES.items()}
    return {to_job.get(k, k): v for k, v in body.items() if k in GENERATION_FIELDS - {"model"}}


def render(status: JobStatus, urls: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"job_id": status.job_id, "status": status.state.value}
    if status.state is JobState.COMPLETED:
        body["images"] = urls
        body["seeds"] = status.seeds
    elif status.progress is not None and not status.is_terminal:
        body["progress"] = status.progress.fraction
    if status.error and status.state is not JobState.COMPLETED:
        body["error"] = status.error
    return body


def error_answer(error: Exception) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) for a client's error, Kafka being unavailable, or anything else (a 500)."""
    if isinstance(error, ClientError):
        message = f"{error.field}: {error.rule}" if error.field else error.rule
        return (400 if error.status in (409, 422) else error.status), {"error": message}
    if isinstance(error, KafkaUnavailable):
        return 503, {"error": UNAVAILABLE_MESSAGE}
    return 500, {"error": INTERNAL_MESSAGE}
