"""RunPod serverless: `{"input": ...}` bodies in three shapes, and the status envelope out.

Shapes, told apart by content:
- `a1111-api`: the A1111 worker's `{"api": {"method", "endpoint"}, "payload": {txt2img}}` (seed 001);
- `a1111`: the official A1111 worker's plain txt2img payload as `input`;
- `public`: RunPod's public image endpoints (`prompt`, `num_inference_steps`, `guidance`, ...) (seed 003).
"""

from __future__ import annotations

from typing import Any

from contract.states import JobState, JobStatus
from dialects import a1111
from dialects.errors import DialectError

SUPPORTED_ENDPOINTS = ("sdapi/v1/txt2img",)
# Fields only an A1111 payload has; their presence selects the plain A1111 shape.
_A1111_KEYS = {"cfg_scale", "sampler_name", "sampler_index", "batch_size", "n_iter", "steps", "scheduler",
               "override_settings", "restore_faces", "enable_hr", "refiner_checkpoint", "subseed"}
_PUBLIC_KEYS = {"prompt", "negative_prompt", "width", "height", "num_inference_steps", "guidance", "seed",
                "num_images", "output_format"}
# The A1111 worker's schema defaults (steps 20, sampler Euler a), not upstream A1111's.
WORKER_DEFAULTS = {**a1111.TXT2IMG_DEFAULTS, "steps": 20, "sampler_index": "Euler a"}


def shape_of(job_input: dict[str, Any]) -> str:
    if "api" in job_input or "payload" in job_input:
        return "a1111-api"
    return "a1111" if _A1111_KEYS & job_input.keys() else "public"


def job_fields(
    body: dict[str, Any], model_names: tuple[str, ...], refiner_names: tuple[str, ...] = ()
) -> tuple[dict[str, Any], str]:
    """(JobSpec fields, shape) from a /run or /runsync body."""
    job_input = body.get("input")
    if not isinstance(job_input, dict):
        raise DialectError("input", "is required and must be an object")
    shape = shape_of(job_input)
    if shape == "a1111-api":
        fields = a1111.job_fields(_payload(job_input), model_names, WORKER_DEFAULTS, refiner_names)
    elif shape == "a1111":
        fields = a1111.job_fields(job_input, model_names, WORKER_DEFAULTS, refiner_names)
    else:
        fields = _public_fields(job_input)
    fields |= _policy(body.get("policy"))
    return fields, shape


def _payload(job_input: dict[str, Any]) -> dict[str, Any]:
    api, payload = job_input.get("api"), job_input.get("payload")
    if not isinstance(api, dict) or not isinstance(payload, dict):
        raise DialectError("input", "`api` and `payload` must both be objects")
    endpoint = str(api.get("endpoint", "")).lstrip("/")
    if endpoint not in SUPPORTED_ENDPOINTS:
        raise DialectError("input.api.endpoint", f"{endpoint!r} is not supported; supported: {', '.join(SUPPORTED_ENDPOINTS)}")
    if str(api.get("method", "")).upper() != "POST":
        raise DialectError("input.api.method", f"{endpoint} takes POST")
    return payload


def _public_fields(job_input: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(job_input.keys() - _PUBLIC_KEYS)
    if unknown:
        raise DialectError(f"input.{unknown[0]}", f"is not a known field; known: {', '.join(sorted(_PUBLIC_KEYS))}")
    renames = {"num_inference_steps": "steps", "guidance": "guidance", "num_images": "num_images"}
    return {renames.get(k, k): v for k, v in job_input.items()}


def _policy(policy: object) -> dict[str, Any]:
    if policy is None:
        return {}
    if not isinstance(policy, dict):
        raise DialectError("policy", "must be an object")
    fields: dict[str, Any] = {}
    for key, target in (("executionTimeout", "execution_timeout_s"), ("ttl", "ttl_s")):
        if key in policy:
            value = policy[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise DialectError(f"policy.{key}", "must be a positive number of milliseconds")
            fields[target] = value / 1000
    return fields


def envelope(status: JobStatus, output: Any | None = None) -> dict[str, Any]:
    """The status envelope of /run, /runsync, /status, /cancel."""
    body: dict[str, Any] = {"id": status.job_id, "status": status.state.value}
    if status.started_at is not None:
        body["delayTime"] = round((status.started_at - status.created_at) * 1000)
    if status.finished_at is not None and status.started_at is not None:
        body["executionTime"] = round((status.finished_at - status.started_at) * 1000)
    if status.runner_id:
        body["workerId"] = status.runner_id
    if status.state is JobState.IN_PROGRESS and status.progress is not None:
        body["output"] = {"progress": f"{status.progress.step}/{status.progress.total}"}
    if output is not None:
        body["output"] = output
    if status.error and status.state is not JobState.COMPLETED:
        body["error"] = status.error
    return body


def public_output(image_urls: list[str]) -> dict[str, Any]:
    if len(image_urls) == 1:
        return {"image_url": image_urls[0], "cost": 0}
    return {"image_url": image_urls[0], "images": [{"image_url": url} for url in image_urls], "cost": 0}
