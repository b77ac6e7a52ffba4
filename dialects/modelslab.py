"""ModelsLab realtime text2img, img2img and inpaint (v6): `key` in the body; answers success / processing / error.

img2img takes `init_image` and `strength`, inpaint also `mask_image`: each an http(s) URL or base64 (a data URL
too). `lora_model` (comma-separated names) and `lora_strength` (comma-separated weights, or one for all) apply
LoRAs on every kind.

Flags (`safety_checker`, `base64`, `instant_response`, `enhance_prompt`) are read by one rule, `flag`: ModelsLab's
clients send booleans, "yes" / "no", "true" / "false" and 1 / 0 alike. `track_id` (a string, or the integer many
clients send) comes back as sent, in the answer and in the webhook. `enhance_prompt` and `enhance_style` are
accepted and not applied (the prompt runs as sent); `meta` says so.

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
FIELD_NAMES = {"num_images": "samples", "steps": "num_inference_steps", "guidance": "guidance_scale",
               "loras": "lora_model"}
FLAGS = ("safety_checker", "instant_response", "base64", "enhance_prompt")
FIELDS = {"key", "prompt", "negative_prompt", "width", "height", "samples", "seed", "webhook", "track_id",
          "num_inference_steps", "guidance_scale", "enhance_style", "lora_model", "lora_strength", *FLAGS}
# The realtime endpoints by what they do: the images each requires (and so takes), besides FIELDS.
KINDS: dict[str, tuple[str, ...]] = {
    "text2img": (), "img2img": ("init_image",), "inpaint": ("init_image", "mask_image"),
}
# Where a request carries its input images (each a URL or base64; the job carries the keys they are stored at).
IMAGE_PATHS: dict[str, tuple[str | int, ...]] = {"init_image": ("init_image",), "mask_image": ("mask_image",)}
TRUE_WORDS = ("yes", "true", "1")
FALSE_WORDS = ("no", "false", "0")
# ModelsLab rewrites prompts with these; Easel runs the prompt as sent, and says so in `meta`.
NOT_APPLIED = ("enhance_prompt", "enhance_style")
NOT_APPLIED_NOTE = "enhance_prompt and enhance_style are accepted and not applied: the prompt ran as sent"
MAX_SIDE = 1024  # ModelsLab's documented limit for realtime
DEFAULT_STEPS = 20


def new_job_id() -> str:
    """ModelsLab's ids are numbers: a random one that is safe as a JavaScript number."""
    return str(secrets.randbelow(2**53 - 1) + 1)


def job_fields(body: dict[str, Any], safety_checker_available: bool = False, kind: str = "text2img") -> dict[str, Any]:
    """JobSpec fields from a text2img, img2img or inpaint body (`kind`); numeric strings are accepted where
    ModelsLab sends them. `init_image` / `mask_image` hold the images as sent (service.input_images stores them).

    `safety_checker_available`: a checker is configured, so `safety_checker: true` can be honoured.
    """
    images = KINDS[kind]
    unknown = sorted(body.keys() - FIELDS - set(images) - ({"strength"} if images else set()))
    if unknown:
        raise InvalidField("is not a known field", unknown[0])
    for name in images:
        if body.get(name) in (None, ""):
            raise InvalidField(f"{name} is required", name)
    for name in FLAGS:  # every flag checked at submit: `flag` reads them from the echoed request later
        flag(body, name)
    _track_id(body)
    style = body.get("enhance_style")
    if style is not None and not isinstance(style, str):
        raise InvalidField("enhance_style must be a string", "enhance_style")
    safety_checker = flag(body, "safety_checker")
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
    if images:
        fields |= {name: body[name] for name in images}
        if body.get("strength") is not None:
            fields["strength"] = _number(body, "strength", 0, float)
    return fields | _loras(body)


def _loras(body: dict[str, Any]) -> dict[str, Any]:
    """`lora_model` "a,b" with `lora_strength` "0.6,0.8" (one weight per name, or one for all; 1 when absent)."""
    names_sent, weights_sent = body.get("lora_model"), body.get("lora_strength")
    if names_sent is None or names_sent == "":
        if weights_sent not in (None, ""):
            raise InvalidField("lora_strength needs a lora_model", "lora_strength")
        return {}
    if not isinstance(names_sent, str):
        raise InvalidField("lora_model must be a comma-separated string of LoRA names", "lora_model")
    names = [name.strip() for name in names_sent.split(",")]
    if not all(names):
        raise InvalidField("lora_model must be a comma-separated string of LoRA names", "lora_model")
    weights = _weights(weights_sent)
    if len(weights) == 1:
        weights *= len(names)
    if len(weights) != len(names):
        raise InvalidField(f"lora_strength must hold one weight, or one per LoRA ({len(names)})", "lora_strength")
    return {"loras": [{"name": name, "weight": weight} for name, weight in zip(names, weights, strict=True)]}


def _weights(sent: object) -> list[float]:
    if sent is None or sent == "":
        return [1.0]
    parts: list[object] = list(sent.split(",")) if isinstance(sent, str) else [sent]
    try:
        return [_weight(part) for part in parts]
    except ValueError:
        raise InvalidField("lora_strength must be a number or comma-separated numbers", "lora_strength") from None


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


def flag(body: dict[str, Any], field: str) -> bool:
    """A flag as ModelsLab clients send it: true / false, "yes" / "no", "true" / "false", 1 / 0 (or "1" / "0");
    absent or null is false."""
    value = body.get(field)
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        value = value.strip().lower()
    elif isinstance(value, int):
        value = str(value)
    if value in TRUE_WORDS or value in FALSE_WORDS:
        return value in TRUE_WORDS
    raise InvalidField(f"{field} must be true or false", field)


def _track_id(body: dict[str, Any]) -> str | int | None:
    """The client's `track_id`: a string, or an integer (many clients send one), echoed back as it came."""
    value = body.get("track_id")
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise InvalidField("track_id must be a string or an integer", "track_id")


def webhook_track_id(body: dict[str, Any]) -> str | None:
    """The track_id the webhook record carries (a string: logs, dead letters). An integer one is not carried there:
    `render` echoes the client's own from the request, so the webhook gets it as an integer."""
    value = _track_id(body)
    return value if isinstance(value, str) else None


def _weight(part: object) -> float:
    if isinstance(part, bool) or not isinstance(part, int | float | str):
        raise ValueError(part)
    return float(part)


def _side(body: dict[str, Any], field: str) -> int:
    value = _number(body, field, 512, int)
    if not 64 <= value <= MAX_SIDE:
        raise InvalidField(f"{field} must be between 64 and {MAX_SIDE}", field)
    if value % 8:
        raise InvalidField(f"{field} must be divisible by 8", field)
    return int(value)


def meta(status: JobStatus) -> dict[str, Any]:
    spec = status.spec
    asked = status.client_input or {}
    notes = {"note": NOT_APPLIED_NOTE} if any(asked.get(name) is not None for name in NOT_APPLIED) else {}
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
        "enhance_prompt": "no",  # what ran: the prompt as sent
        "enhance_style": None,
        **({"strength": spec["strength"]} if spec.get("strength") is not None else {}),
        **({"lora_model": ",".join(lora["name"] for lora in spec["loras"])} if spec.get("loras") else {}),
        **notes,
    }


def render(
    status: JobStatus, urls: list[str], base64_images: list[str] | None, fetch_url: str, webhook: bool = False
) -> dict[str, Any]:
    """The success / processing / error union for a job's current status (`webhook`: as a webhook names it), with
    the client's `track_id` as it sent it."""
    body = _render(status, urls, base64_images, fetch_url, webhook)
    track_id = (status.client_input or {}).get("track_id")
    return body if track_id is None else {**body, "track_id": track_id}


def _render(
    status: JobStatus, urls: list[str], base64_images: list[str] | None, fetch_url: str, webhook: bool
) -> dict[str, Any]:
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
