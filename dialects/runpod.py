"""RunPod serverless: `{"input": ...}` bodies in three shapes, and the status envelope out.

Shapes, told apart by content:
- `a1111-api`: the A1111 worker's `{"api": {"method", "endpoint"}, "payload": {...}}` for txt2img (seed 001) or
  img2img (`sdapi/v1/img2img`);
- `a1111`: the official A1111 worker's plain txt2img or img2img (it has `init_images`) payload as `input`;
- `public`: RunPod's public image endpoints (`prompt`, `num_inference_steps`, `guidance`, ...) (seed 003), with
  the native `init_image`, `mask_image`, `strength` for img2img and inpainting.

Input images (base64 or http(s) URLs) are stored by the API; the echoed `input` carries `{"stored": <key>}` in
their place, so no image travels on Kafka or counts against the echo cap.

Every shape may carry `input.track_id` (a string): it is taken out before the shape is read, and comes back in
webhooks (top-level `track_id`, and in the echoed `input`). The endpoint id in `/v2/{endpoint_id}/...` is free;
one that names a configured model is that model for requests that name none themselves (RunPod's public endpoints
are named after their model). `policy.executionTimeout` and `policy.ttl` are milliseconds, refused by their own
names when out of range, never cut short silently.

A job's state is named as `JobState` names it: those are RunPod's names. Errors are `{"error": "<message>"}` with
RunPod's codes: 400 (a 409 or 422 elsewhere), 401, 404, 429, 503, 500.
"""

from __future__ import annotations

from typing import Any

from contract.catalog import DEFAULT_MODEL
from contract.errors import INTERNAL_MESSAGE, UNAVAILABLE_MESSAGE, ClientError, InvalidField, KafkaUnavailable
from contract.job import MAX_EXECUTION_TIMEOUT_S, MAX_TTL_S
from contract.states import JobState, JobStatus
from dialects import a1111

IMG2IMG_ENDPOINT = "sdapi/v1/img2img"
SUPPORTED_ENDPOINTS = ("sdapi/v1/txt2img", IMG2IMG_ENDPOINT)
# Fields only an A1111 payload has; their presence selects the plain A1111 shape.
_A1111_KEYS = {"cfg_scale", "sampler_name", "sampler_index", "batch_size", "n_iter", "steps", "scheduler",
               "override_settings", "restore_faces", "enable_hr", "refiner_checkpoint", "subseed", "init_images",
               "denoising_strength"}
_PUBLIC_KEYS = {"prompt", "negative_prompt", "width", "height", "num_inference_steps", "guidance", "seed",
                "num_images", "output_format", "init_image", "mask_image", "strength"}
# The public shape's names that are not the job's (job field → the client's name).
_PUBLIC_NAMES = {"steps": "num_inference_steps"}
_PUBLIC_IMAGE_PATHS: dict[str, tuple[str | int, ...]] = {"init_image": ("init_image",), "mask_image": ("mask_image",)}
# The A1111 worker's schema defaults (steps 20, sampler Euler a), not upstream A1111's.
_WORKER = {"steps": 20, "sampler_index": "Euler a"}
WORKER_DEFAULTS = {**a1111.TXT2IMG_DEFAULTS, **_WORKER}
WORKER_IMG2IMG_DEFAULTS = {**a1111.IMG2IMG_DEFAULTS, **_WORKER}
TRACK_ID = "track_id"
MAX_TRACK_ID_LENGTH = 256
# `lowPriority` only keeps RunPod from scaling workers up: Easel has no such thing, so it changes nothing here.
_POLICY_KEYS = ("executionTimeout", "lowPriority", "ttl")


def shape_of(job_input: dict[str, Any]) -> str:
    if "api" in job_input or "payload" in job_input:
        return "a1111-api"
    return "a1111" if _A1111_KEYS & job_input.keys() else "public"


def job_fields(
    body: dict[str, Any],
    model_names: tuple[str, ...],
    refiner_names: tuple[str, ...] = (),
    endpoint_id: str = "",
    max_execution_s: float = MAX_EXECUTION_TIMEOUT_S,
) -> tuple[dict[str, Any], str]:
    """(JobSpec fields, shape) from a /run or /runsync body.

    `max_execution_s`: the longest `policy.executionTimeout` the runners honour (EASEL_JOB_TIMEOUT_S).
    """
    job_input = _input(body)
    track_id(body)  # refused here, by its name, before the shape's own fields
    job_input = {k: v for k, v in job_input.items() if k != TRACK_ID}
    shape = shape_of(job_input)
    if shape == "public":
        fields = _public_fields(job_input)
    else:
        payload = _payload(job_input) if shape == "a1111-api" else job_input
        if is_img2img(job_input):
            fields = a1111.img2img_fields(payload, model_names, WORKER_IMG2IMG_DEFAULTS, refiner_names)
        else:
            fields = a1111.job_fields(payload, model_names, WORKER_DEFAULTS, refiner_names)
    if endpoint_id in model_names and fields.get("model", DEFAULT_MODEL) == DEFAULT_MODEL:
        fields["model"] = endpoint_id
    fields |= _policy(body.get("policy"), max_execution_s)
    return fields, shape


def track_id(body: dict[str, Any]) -> str | None:
    """`input.track_id`, the client's correlation id, in any shape."""
    value = _input(body).get(TRACK_ID)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TRACK_ID_LENGTH:
        raise InvalidField(f"must be a string of at most {MAX_TRACK_ID_LENGTH} characters", f"input.{TRACK_ID}")
    return value


def is_img2img(job_input: dict[str, Any]) -> bool:
    """An A1111-shaped input for img2img: the worker's `sdapi/v1/img2img`, or a plain payload with init_images."""
    api = job_input.get("api")
    if isinstance(api, dict):
        return str(api.get("endpoint", "")).lstrip("/") == IMG2IMG_ENDPOINT
    return "payload" not in job_input and "init_images" in job_input


def images_of(job_input: dict[str, Any]) -> tuple[dict[str, tuple[str | int, ...]], a1111.Img2ImgIntake]:
    """Where an input (that passed `job_fields`) carries its images, from `input`, and what intake does to them."""
    shape = shape_of(job_input)
    if shape == "public":
        return _PUBLIC_IMAGE_PATHS, a1111.Img2ImgIntake()
    if not is_img2img(job_input):
        return {}, a1111.Img2ImgIntake()
    if shape == "a1111-api":
        paths = {field: ("payload", *path) for field, path in a1111.IMAGE_PATHS.items()}
        return paths, a1111.intake(job_input["payload"], WORKER_IMG2IMG_DEFAULTS)
    return a1111.IMAGE_PATHS, a1111.intake(job_input, WORKER_IMG2IMG_DEFAULTS)


def _input(body: dict[str, Any]) -> dict[str, Any]:
    job_input = body.get("input")
    if not isinstance(job_input, dict):
        raise InvalidField("is required and must be an object", "input")
    return job_input


def field_names(shape: str) -> tuple[str, dict[str, str]]:
    """Where a job field sits in a request of this shape: (the prefix, job field → the client's name)."""
    if shape == "public":
        return "input", _PUBLIC_NAMES
    return ("input.payload" if shape == "a1111-api" else "input"), a1111.FIELD_NAMES


def _payload(job_input: dict[str, Any]) -> dict[str, Any]:
    api, payload = job_input.get("api"), job_input.get("payload")
    if not isinstance(api, dict) or not isinstance(payload, dict):
        raise InvalidField("`api` and `payload` must both be objects", "input")
    endpoint = str(api.get("endpoint", "")).lstrip("/")
    if endpoint not in SUPPORTED_ENDPOINTS:
        supported = ", ".join(SUPPORTED_ENDPOINTS)
        raise InvalidField(f"{endpoint!r} is not supported; supported: {supported}", "input.api.endpoint")
    if str(api.get("method", "")).upper() != "POST":
        raise InvalidField(f"{endpoint} takes POST", "input.api.method")
    return payload


def _public_fields(job_input: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(job_input.keys() - _PUBLIC_KEYS)
    if unknown:
        raise InvalidField(f"is not a known field; known: {', '.join(sorted(_PUBLIC_KEYS))}", f"input.{unknown[0]}")
    to_job = {client: job for job, client in _PUBLIC_NAMES.items()}
    return {to_job.get(k, k): v for k, v in job_input.items()}


def _policy(policy: object, max_execution_s: float) -> dict[str, Any]:
    if policy is None:
        return {}
    if not isinstance(policy, dict):
        raise InvalidField("must be an object", "policy")
    if unknown := sorted(policy.keys() - set(_POLICY_KEYS)):
        raise InvalidField(f"is not a known field; known: {', '.join(_POLICY_KEYS)}", f"policy.{unknown[0]}")
    if not isinstance(policy.get("lowPriority", False), bool):
        raise InvalidField("must be a boolean", "policy.lowPriority")
    fields: dict[str, Any] = {}
    limits_ms = {"executionTimeout": min(MAX_EXECUTION_TIMEOUT_S, max_execution_s) * 1000, "ttl": MAX_TTL_S * 1000}
    for key, target in (("executionTimeout", "execution_timeout_s"), ("ttl", "ttl_s")):
        if key in policy:
            value = policy[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= limits_ms[key]:
                raise InvalidField(f"must be a number of milliseconds above 0 and at most {limits_ms[key]:.0f}",
                                   f"policy.{key}")
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


def error_answer(error: Exception) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body); validation problems joined with newlines, as the A1111 worker joins them."""
    if isinstance(error, ClientError):
        message = "\n".join(f"{d['field']}: {d['rule']}" for d in error.details) if error.details else error.message
        return (400 if error.status in (409, 422) else error.status), {"error": message}
    if isinstance(error, KafkaUnavailable):
        return 503, {"error": UNAVAILABLE_MESSAGE}
    return 500, {"error": INTERNAL_MESSAGE}
