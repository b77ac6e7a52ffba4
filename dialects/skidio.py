"""Skidio Labs txt2img: `{"input": {"api_key"}, "prompt", ...}`; sync answers with the image."""

from __future__ import annotations

from typing import Any

from contract.states import JobState, JobStatus
from dialects.errors import DialectError

GENERATION_FIELDS = {"model", "prompt", "negative_prompt", "width", "height", "batch_size", "steps", "seed",
                     "guidance_scale"}
MODELS = ("sdxl",)  # the model names Skidio clients send that this server serves


def api_key(body: dict[str, Any]) -> str | None:
    job_input = body.get("input")
    return job_input.get("api_key") if isinstance(job_input, dict) else None


def job_fields(body: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(body.keys() - GENERATION_FIELDS - {"input", "webhook"})
    if unknown:
        raise DialectError(unknown[0], "is not a known field")
    model = body.get("model", "sdxl")
    if model not in MODELS:
        raise DialectError("model", f"must be one of: {', '.join(MODELS)}")
    fields = {k: v for k, v in body.items() if k in GENERATION_FIELDS - {"model", "batch_size", "guidance_scale"}}
    if "batch_size" in body:
        fields["num_images"] = body["batch_size"]
    if "guidance_scale" in body:
        fields["guidance"] = body["guidance_scale"]
    return fields


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
